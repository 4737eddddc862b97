"""ninja progress + ETA, work-edge counting over build.ninja and .ninja_log, and how far
a stopped build got."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.stages import compile as build
from vllm_matrix.stages.compile import ninja
from vllm_matrix.stages.compile.ninja import NinjaProgress

# ------------------------------------------------------------------ progress

# What pip -v shows of vLLM 0.4.2's setup.py: one ninja run per extension target.
NINJA_LINES = [
    "-- Build files have been written to: /w/src/build/temp.linux-x86_64-cpython-311",
    "[1/3] Building CUDA object CMakeFiles/_moe_C.dir/csrc/moe/topk_softmax_kernels.cu.o",
    "[2/3] Building CXX object CMakeFiles/_moe_C.dir/csrc/moe/moe_ops.cpp.o",
    "[3/3] Linking CXX shared module /w/src/build/lib.linux-x86_64-cpython-311/vllm/"
    "_moe_C.cpython-311-x86_64-linux-gnu.so",
    "-- Configuring done",
    "[1/4] Building CUDA object CMakeFiles/_C.dir/csrc/cache_kernels.cu.o",
    "[2/4] Building CUDA object CMakeFiles/_C.dir/csrc/attention/attention_kernels.cu.o",
    "[3/4] Building CUDA object CMakeFiles/_C.dir/csrc/pos_encoding_kernels.cu.o",
    "[4/4] Linking CXX shared module /w/src/build/lib/vllm/_C.cpython-311-x86_64-linux-gnu.so",
]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_ninja_progress_percent_eta_and_runs() -> None:
    clock = Clock()
    seen: list[str] = []
    p = NinjaProgress(emit=seen.append, interval=5.0, clock=clock)
    times = [0, 60, 62, 63, 70, 170, 171, 370, 380]
    for t, line in zip(times, NINJA_LINES, strict=True):
        clock.t = t
        p.feed(line)
    assert [(r.target, r.total, r.done) for r in p.runs] == [("_moe_C", 3, 3), ("_C", 4, 4)]
    assert p.steps_run == 7
    # the second run's start is the last non-ninja line before it (t=70)
    assert p.runs[1].started == 70
    assert seen[0] == "build _moe_C: 1/3 (33%), 1m00s in, ETA 2m00s"
    assert "build _C: 1/4 (25%), 1m40s in, ETA 5m00s" in seen
    assert seen[-1] == "build _C: 4/4 (100%), 5m10s in, done"


def test_eta_counts_units_in_flight() -> None:
    run = ninja.NinjaRun(total=18, done=1, started=0.0, last=600.0, first_done=1)
    assert run.eta() == pytest.approx(600 * 17)
    # 2 jobs: the other unit is about half done -> 1.5 units in 600 s, 16.5 to go
    assert run.eta(jobs=2) == pytest.approx(400 * 16.5)
    done = ninja.NinjaRun(total=18, done=18, started=0.0, last=600.0)
    assert done.eta(2) == 0.0


def test_ninja_progress_is_throttled() -> None:
    clock = Clock()
    p = NinjaProgress(interval=5.0, clock=clock)
    p.feed("[1/100] Building CUDA object CMakeFiles/_C.dir/a.cu.o")
    emitted = []
    for n in range(2, 100):
        clock.t += 1.0
        emitted.append(p.feed(f"[{n}/100] Building CUDA object CMakeFiles/_C.dir/a.cu.o"))
    assert sum(m is not None for m in emitted) == 19  # one every 5 s of 98 s
    clock.t += 0.1
    assert p.feed("[100/100] Linking CXX shared module x/_C.so") is not None  # last always


def test_one_run_of_every_target_is_named_by_its_label_not_its_first_edge() -> None:
    """vLLM 0.20.0's setup.py builds every target in one ninja run: its first edge's
    target (_C) is not what runs; the "all targets" count would repeat the run's own."""
    clock = Clock()
    p = NinjaProgress(interval=5.0, clock=clock, overall=lambda: (1, 104), label="targets _C, X")
    msg = p.feed("[1/104] Building CUDA object CMakeFiles/_C.dir/a.cu.o")
    assert msg is not None and msg.startswith("build targets _C, X: 1/104 (0%)")
    assert "all targets" not in msg
    # A resumed build's run covers less than the whole: named by its target, with the count.
    r = NinjaProgress(interval=5.0, clock=clock, overall=lambda: (90, 104))
    msg = r.feed("[1/14] Building CUDA object CMakeFiles/_C.dir/a.cu.o")
    assert msg is not None and msg.startswith("build _C: 1/14") and "all targets 90/104" in msg
    assert NinjaProgress(overall=lambda: (1, 3)).feed("[1/3] Linking x/_C.so") is not None


def test_a_silent_build_gets_a_heartbeat_naming_the_edges_left() -> None:
    """The H200 run: 102/104 after 14m25s, then 10 minutes with no line while
    scaled_mm_c2x.cu compiled alone; the ETA said 8s."""
    clock = Clock()
    seen: list[str] = []
    left = ["scaled_mm_c2x.cu.o", "_C_stable_libtorch.abi3.so"]
    p = NinjaProgress(emit=seen.append, interval=5.0, clock=clock, quiet_s=60.0, left=lambda: left)
    assert p.quiet() is None  # nothing started
    p.feed("-- Build files have been written to: /w/src/build/temp.linux-x86_64-cpython-312")
    clock.t = 865.0
    p.feed("[102/104] Building CUDA object CMakeFiles/_C.dir/b.cu.o")
    clock.t = 900.0
    assert p.quiet() is None  # said something 35 s ago
    clock.t = 925.0
    beat = p.quiet()
    assert beat == (
        "build _C: 102/104 (98%), 15m25s in, no edge finished for 1m00s; "
        "left: scaled_mm_c2x.cu.o, _C_stable_libtorch.abi3.so"
    )
    assert seen[-1] == beat
    clock.t = 950.0
    assert p.quiet() is None  # one a minute
    clock.t = 1465.0
    assert p.quiet() is not None and "no edge finished for 10m00s" in seen[-1]
    left[:] = [f"u{i}.cu.o" for i in range(7)]
    clock.t = 1530.0
    assert p.quiet() == (
        "build _C: 102/104 (98%), 25m30s in, no edge finished for 11m05s; "
        "left: u0.cu.o, u1.cu.o, u2.cu.o, u3.cu.o and 3 more"
    )
    p.feed("[104/104] Linking CXX shared module x/_C_stable_libtorch.abi3.so")
    clock.t = 2000.0
    assert p.quiet() is None  # the run is done


def test_no_work_runs_are_counted() -> None:
    p = NinjaProgress()
    p.feed("ninja: no work to do.")
    assert p.no_work == 1 and p.runs == []


def test_fmt_seconds() -> None:
    assert ninja.fmt_seconds(59.4) == "59s"
    assert ninja.fmt_seconds(61) == "1m01s"
    assert ninja.fmt_seconds(3 * 3600 + 120) == "3h02m"


# Shaped like the build.ninja CMake writes for vLLM 0.4.2 (trimmed).
BUILD_NINJA = """\
rule CUDA_COMPILER__vllm_C_unscanned_RelWithDebInfo
  command = nvcc $in
build CMakeFiles/_C.dir/csrc/cache_kernels.cu.o: CUDA_COMPILER___C_unscanned_RelWithDebInfo \
/w/src/csrc/cache_kernels.cu || cmake_object_order_depends_target__C
build CMakeFiles/_C.dir/csrc/ops.cpp.o: CXX_COMPILER___C_unscanned_RelWithDebInfo $
    /w/src/csrc/ops.cpp || cmake_object_order_depends_target__C
build /w/lib/vllm/_C.so: CXX_SHARED_MODULE_LINKER___C_RelWithDebInfo $
    CMakeFiles/_C.dir/csrc/cache_kernels.cu.o CMakeFiles/_C.dir/csrc/ops.cpp.o | /t/libc10.so
build cmake_object_order_depends_target__C: phony || CMakeFiles/_C.dir
build CMakeFiles/_punica_C.dir/p.cu.o: CUDA_COMPILER___punica_C_unscanned_RelWithDebInfo p.cu
build /w/lib/vllm/_punica_C.so: CXX_SHARED_MODULE_LINKER___punica_C_RelWithDebInfo $
    CMakeFiles/_punica_C.dir/p.cu.o
build _C: phony /w/lib/vllm/_C.so
build _punica_C: phony /w/lib/vllm/_punica_C.so
build CMakeFiles/edit_cache.util: CUSTOM_COMMAND
build edit_cache: phony CMakeFiles/edit_cache.util
build default: phony /w/lib/vllm/_C.so
build all: phony /w/lib/vllm/_C.so /w/lib/vllm/_punica_C.so
"""


def test_ninja_work_edges_count_compile_and_link_only(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(BUILD_NINJA)
    # from vLLM's `default` target: _punica_C (not asked for) is left out
    assert ninja.ninja_work_edges(tmp_path / "build.ninja") == 3
    without_default = BUILD_NINJA.replace("build default:", "build other:")
    (tmp_path / "build.ninja").write_text(without_default)
    assert ninja.ninja_work_edges(tmp_path / "build.ninja") == 5  # from `all`
    (tmp_path / "build.ninja").write_text(BUILD_NINJA)
    assert ninja.ninja_work_outputs(tmp_path / "build.ninja") == {
        "CMakeFiles/_C.dir/csrc/cache_kernels.cu.o",
        "CMakeFiles/_C.dir/csrc/ops.cpp.o",
        "/w/lib/vllm/_C.so",
    }


def test_overall_progress_counts_what_earlier_runs_built(tmp_path: Path) -> None:
    bt = tmp_path / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    (bt / "build.ninja").write_text(BUILD_NINJA)
    overall = ninja.OverallProgress(tmp_path)
    assert overall() == (0, 3)
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n"
        "0\t9\t0\tCMakeFiles/_C.dir/csrc/ops.cpp.o\tab\n"
        "0\t9\t0\tbuild.ninja\tcd\n"  # cmake's re-run: not a work edge
        "9\t19\t0\tCMakeFiles/_C.dir/csrc/ops.cpp.o\tab\n"  # rebuilt: counted once
    )
    assert overall() == (1, 3)
    # A read that sees fewer entries (ninja logs an edge after printing it; a log being
    # rewritten) never takes the count back.
    (bt / ".ninja_log").write_text("# ninja log v6\n")
    assert overall() == (1, 3)
    assert ninja.OverallProgress(tmp_path)() == (0, 3)
    assert ninja.OverallProgress(tmp_path / "nothing")() is None


def test_overall_progress_names_the_edges_left(tmp_path: Path) -> None:
    bt = tmp_path / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    (bt / "build.ninja").write_text(BUILD_NINJA)
    overall = ninja.OverallProgress(tmp_path)
    assert overall.left() == ["cache_kernels.cu.o", "ops.cpp.o", "_C.so"]  # compiles first
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n0\t9\t0\tCMakeFiles/_C.dir/csrc/ops.cpp.o\tab\n"
    )
    assert overall.left() == ["cache_kernels.cu.o", "_C.so"]
    assert ninja.OverallProgress(tmp_path / "nothing").left() == []


def test_progress_of_a_stopped_build(tmp_path: Path) -> None:
    bt = tmp_path / "src" / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    (bt / "build.ninja").write_text(BUILD_NINJA)
    p0 = build.progress_of(tmp_path)
    assert p0 is not None and p0.pop("targets")["_C"] == {"edges": 3, "edges_done": 0}
    assert p0 == {"edges_done": 0, "edges": 3, "edge_seconds_done": 0}
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n"
        "0\t90000\t0\tCMakeFiles/_C.dir/csrc/cache_kernels.cu.o\tab\n"
        "0\t500\t0\tbuild.ninja\tcd\n"
    )
    p = build.progress_of(tmp_path)
    assert p is not None and p.pop("targets")["_C"]["edge_seconds"] == 90
    assert p == {
        "edges_done": 1,
        "edges": 3,
        "edge_seconds_done": 90,
    }
    assert build.progress_of(tmp_path / "nothing") is None


def test_progress_projects_only_from_enough_edges(tmp_path: Path) -> None:
    bt = tmp_path / "src" / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    outs = [f"CMakeFiles/_C.dir/u{i}.cu.o" for i in range(40)]
    (bt / "build.ninja").write_text(
        "".join(f"build {o}: CUDA_COMPILER___C_unscanned x.cu\n" for o in outs)
    )
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n" + "".join(f"0\t10000\t0\t{o}\tab\n" for o in outs[:10])
    )
    p = build.progress_of(tmp_path)
    assert p is not None and p["edges_done"] == 10 and p["edges"] == 40
    assert p["edge_seconds_projected"] == 400


# figures per target (the GPU-machine run's targets.json)
def test_target_figures_per_target(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(BUILD_NINJA)
    (tmp_path / ".ninja_log").write_text(
        "# ninja log v6\n"
        "0\t90000\t0\tCMakeFiles/_C.dir/csrc/cache_kernels.cu.o\tab\n"
        "10\t30000\t0\tCMakeFiles/_C.dir/csrc/ops.cpp.o\tab\n"
        "0\t500\t0\tbuild.ninja\tcd\n"
    )
    figs = ninja.target_figures(tmp_path)
    assert figs["_C"] == {
        "edges": 3,
        "edges_done": 2,
        "edge_seconds": 120.0,
        "longest_edge_s": 90.0,
        "span_s": 90.0,
    }
    assert figs["_punica_C"] == {"edges": 2, "edges_done": 0}
    assert ninja.ninja_work_edges(tmp_path / "build.ninja", ["_punica_C"]) == 2
    assert ninja.target_figures(tmp_path / "none") == {}


def test_configure_clock_reads_cmake_and_the_first_step() -> None:
    t = iter([0.0, 42.5])
    c = ninja.ConfigureClock(clock=lambda: next(t))
    for line in ["-- Configuring done (23.1s)", "-- Generating done (0.1s)", "x", "[1/29] CXX"]:
        c.feed(line)
    assert c.to_json() == {"configuring_s": 23.1, "generating_s": 0.1, "until_first_step_s": 42.5}


def test_configure_clock_takes_the_first_steps_own_time_off() -> None:
    """Piped, ninja prints "[1/N]" as the first step ends: issue 24's H100 hold (longest
    edges first) saw it 193.3 s in, 164.9 s of which was that edge; ninja began at 28.4 s."""
    t = iter([0.0, 193.3])
    c = ninja.ConfigureClock(clock=lambda: next(t))
    for line in ["-- Configuring done (21.9s)", "[1/82] Building CUDA object x.cu.o"]:
        c.feed(line)
    assert c.to_json(164.9) == {
        "configuring_s": 21.9,
        "until_first_step_s": 28.4,
        "first_step_line_s": 193.3,
    }


def test_eta_weighs_edges_by_their_expected_times(tmp_path: Path) -> None:
    """A longest-first build: its first edges are its longest, so the count of edges says
    far too much time is left; the schedule's expected times, scaled by how the finished
    edges ran against theirs, say how much is."""
    import json

    bt = tmp_path / "build" / "temp.linux-x86_64-cpython-312"
    bt.mkdir(parents=True)
    (bt / "build.ninja").write_text(BUILD_NINJA)
    overall = ninja.OverallProgress(tmp_path)
    assert overall.eta(2) is None  # no schedule
    expected = {"CMakeFiles/_C.dir/long1.cu.o": 300.0, "CMakeFiles/_C.dir/long2.cu.o": 280.0}
    expected |= {f"CMakeFiles/_C.dir/short{i}.cu.o": 10.0 for i in range(20)}
    (bt / "vllm-matrix-schedule.json").write_text(json.dumps({"expected": expected}))
    log = "# ninja log v7\n0\t450000\t0\tCMakeFiles/_C.dir/long1.cu.o\tab\n"
    (bt / ".ninja_log").write_text(log)
    assert overall.eta(2) is None  # one scheduled edge finished: no scale yet
    log += "0\t420000\t0\tCMakeFiles/_C.dir/long2.cu.o\tcd\n"
    (bt / ".ninja_log").write_text(log)
    # they ran 1.5x their expected times; 20 x 10 s left on 2 jobs: 150 s
    assert overall.eta(2) == pytest.approx(1.5 * 200 / 2)
    # the longest edge left is the floor
    (bt / "vllm-matrix-schedule.json").write_text(
        json.dumps({"expected": expected | {"CMakeFiles/_C.dir/late.cu.o": 190.0}})
    )
    assert overall.eta(2) == pytest.approx(1.5 * 390 / 2)
    assert overall.eta(16) == pytest.approx(1.5 * 190)

    # In the progress message of the run that covers the whole build, it replaces the
    # count's ETA: 2 of 22 edges in 450 s by count is 75 min; by time 2m25s.
    (bt / "vllm-matrix-schedule.json").write_text(json.dumps({"expected": expected}))
    clock = Clock()
    p = NinjaProgress(
        clock=clock, overall=lambda: (2, 22), jobs=2, label="targets _C", timed_eta=overall.eta
    )
    p.feed("-- Configuring done")
    clock.t = 450.0
    msg = p.feed("[2/22] Building CUDA object CMakeFiles/_C.dir/long2.cu.o")
    assert msg is not None and msg.endswith("ETA 2m30s"), msg
    # a run that is not the whole build keeps the count's ETA
    q = NinjaProgress(clock=clock, overall=lambda: (12, 22), jobs=2, timed_eta=overall.eta)
    q.feed("-- Configuring done")
    msg = q.feed("[2/12] Building CUDA object CMakeFiles/_C.dir/short1.cu.o")
    assert msg is not None and "ETA 2m30s" not in msg
