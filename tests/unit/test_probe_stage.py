"""probe stage: the per-unit pipeline end to end, on the fixture tree with fake tools.

nvcc, cudafe++, gcc and g++ are fakes that print or fail the way the real tools do.
"""

from __future__ import annotations

import dataclasses
import stat
import sys
import time
from pathlib import Path

import pytest
from probe_trees import (
    hits,
    make_facts,
    make_tree,
    toolkit,
    torch_env,
)

from vllm_matrix.infra import index
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import StageResult
from vllm_matrix.knowledge import probe_units
from vllm_matrix.stages import probe
from vllm_matrix.stages.env.fixups import Fixup, Fixups

# ------------------------------------------------------------------ the stage, fake tools

FAKE_NVCC = """\
#!PYTHON
import os, sys
args = sys.argv[1:]
src = args[args.index("-c") + 1]
keep = args[args.index("--keep-dir") + 1]
obj = args[args.index("-o") + 1]
base = os.path.basename(src).rsplit(".", 1)[0]
gens = [args[i + 1] for i, a in enumerate(args) if a == "-gencode"]
tools = os.path.dirname(os.path.abspath(__file__))
ii = os.path.join(keep, base + ".cpp4.ii")
print("#$ _HERE_=" + tools)
print("#$ PATH=" + tools + ":" + os.environ.get("PATH", ""))
print(f"#$ {tools}/gcc -E -x c++ {src} -o {ii}")
print(f"#$ cudafe++ --gen_c_file_name {keep}/{base}.cudafe1.cpp {ii}")
for g in gens:
    print(f"#$ {tools}/gcc -D__CUDA_ARCH__=900 -E -x c++ {src} -o {keep}/{base}.cpp1.ii")
    print(f"#$ cicc {keep}/{base}.cpp1.ii -o {keep}/{base}.ptx -gencode={g}")
print(f"#$ {tools}/gcc -c -x c++ {keep}/{base}.cudafe1.cpp -o {obj}")
"""

# gcc: -E copies the source, an #include of an absolute path replaced by the file (a
# generated file of several units), with gcc's line markers; -c writes the object.
# cudafe++: an EDG-style error for Float8_e8m0fnu unless the (fake) torch has it; its
# input's name appended to $FAKE_CALLS. cicc: logs its -gencode.
FAKE_GCC = """\
#!PYTHON
import re, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1]
src = [a for a in args if a.endswith((".cu", ".cpp", ".ii"))][0]
def expand(m):
    return f'# 1 "{m.group(1)}"\\n' + open(m.group(1)).read()
if "-E" in args:
    text = re.sub(r'^#include "(/[^"]+)"$', expand, open(src).read(), flags=re.M)
    if text.count("#define CLASH") > 1:
        print('h.h:1: warning: "CLASH" redefined', file=sys.stderr)
    open(out, "w").write(f'# 1 "{src}"\\n' + text)
else:
    open(out, "w").write("obj")
"""
FAKE_CUDAFE = """\
#!PYTHON
import os, sys
ii = sys.argv[-1]
if os.environ.get("FAKE_CALLS"):
    open(os.environ["FAKE_CALLS"], "a").write(os.path.basename(ii) + "\\n")
for n, line in enumerate(open(ii), 1):
    if "Float8_e8m0fnu" in line and not os.environ.get("FAKE_TORCH_HAS_F8"):
        print(f'{ii}({n}): error: namespace "at" has no member "Float8_e8m0fnu"')
        print(f'1 error detected in the compilation of "{ii}".')
        sys.exit(2)
"""
FAKE_CICC = """\
#!PYTHON
import os, sys, time
time.sleep(float(os.environ.get("FAKE_CICC_SLEEP", "0")))
print("cicc", sys.argv[-1])
open(sys.argv[sys.argv.index("-o") + 1], "w").write("ptx")
"""
FAKE_CXX = """\
#!PYTHON
import sys
sys.exit(0)
"""


def fake_tools(d: Path) -> Path:
    d.mkdir(parents=True)
    for name, text in (
        ("nvcc", FAKE_NVCC),
        ("gcc", FAKE_GCC),
        ("cudafe++", FAKE_CUDAFE),
        ("cicc", FAKE_CICC),
        ("c++", FAKE_CXX),
    ):
        p = d / name
        p.write_text(text.replace("#!PYTHON", f"#!{sys.executable}"))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return d


@pytest.fixture
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VLLM_CUTLASS_SRC_DIR", raising=False)
    monkeypatch.setattr(index, "project_files", lambda project: ())
    tools = fake_tools(tmp_path / "tools")
    tree = make_tree(tmp_path / "tree")
    tk = toolkit(tmp_path / "cuda", nvcc=tools / "nvcc")
    tv = torch_env(tmp_path / "env")
    fx = Fixups((Fixup("CXX", str(tools / "c++"), "test"), Fixup("PATH", str(tools), "test")), ())
    cell = Cell("0.8.4", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
    return {"tree": tree, "tk": tk, "tv": tv, "fx": fx, "cell": cell, "facts": make_facts()}


def run(stage: dict[str, object], work: Path, **kw: object) -> StageResult:
    return probe.run_probe(
        stage["cell"],
        stage["tree"],
        stage["facts"],
        stage["tk"],
        stage["tv"],  # type: ignore[arg-type]
        stage["fx"],
        work,
        api_hits=hits(stage["tree"]),
        **kw,  # type: ignore[arg-type]
    )


def test_front_end_failure_is_classified_and_quoted(
    stage: dict[str, object], tmp_path: Path
) -> None:
    r = run(stage, tmp_path / "work", depth="front-end")
    assert r.stage == "probe" and r.status == "fail"
    assert "front-end" in r.summary and "gptq_marlin.cu (Float8_e8m0fnu)" in r.summary
    units = {u["path"]: u for u in r.details["units"]}
    gm = units["csrc/quantization/gptq_marlin/gptq_marlin.cu"]
    assert gm["status"] == "fail" and gm["depth"] == "front-end"
    assert 'error: namespace "at" has no member "Float8_e8m0fnu"' in gm["first_error"]
    assert Path(gm["log"]) == tmp_path / "work" / "logs" / (
        "csrc__quantization__gptq_marlin__gptq_marlin.cu.log"
    )
    assert [s["phase"] for s in gm["steps"]] == ["host-preprocess", "front-end"]
    (f,) = [f for f in r.findings if f.level == "fail"]
    assert f.rule == "signature:torch_lacks_float8_e8m0fnu"
    assert 'has no member "Float8_e8m0fnu"' in f.message
    for u in units.values():  # every row says why, how deep, how long, where the log is
        assert u["why"] and u["status"] in ("pass", "fail") and u["seconds"] >= 0
    assert units["csrc/torch_bindings.cpp"]["status"] == "pass"
    assert "flags and where they come from" in Path(gm["log"]).read_text()
    assert (tmp_path / "work" / "probe.log").is_file()


def test_front_end_passes_with_a_torch_that_has_the_symbol(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    r = run(stage, tmp_path / "work", depth="front-end")
    assert r.status == "pass" and "front-end, all passed" in r.summary
    assert all(u["depth"] == "front-end" for u in r.details["units"])
    assert not (tmp_path / "work" / "obj").exists() or not any(
        (tmp_path / "work" / "obj").iterdir()
    )


def test_codegen_runs_lowest_arch_only(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    r = run(
        stage,
        tmp_path / "work",
        depth="codegen",
        only=["csrc/quantization/gptq_marlin/gptq_marlin.cu"],
    )
    (u,) = r.details["units"]
    assert u["status"] == "pass" and u["depth"] == "codegen" and r.details["depth"] == "codegen"
    phases = [s["phase"] for s in u["steps"]]
    assert phases.count("device-codegen") == 1  # sm_90 only, not also compute_90
    log = Path(u["log"]).read_text()
    assert "-gencode=arch=compute_90,code=sm_90" in log
    assert (tmp_path / "work" / "obj").is_dir()


def test_auto_codegen_respects_the_budget(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    r = run(stage, tmp_path / "w1", depth="auto", budget_s=0.0)
    gated = [
        u
        for u in r.details["units"]
        if "ARCHS" in u["family"] and not u["family"].startswith("CUDA_ARCHS")
    ]
    assert gated and all(u["depth"] == "front-end" for u in gated)
    assert all("codegen skipped" in u["note"] for u in gated)
    r = run(stage, tmp_path / "w2", depth="auto", budget_s=3600.0)
    units = {u["path"]: u for u in r.details["units"]}
    assert units["csrc/quantization/gptq_marlin/gptq_marlin.cu"]["depth"] == "codegen"
    assert units["csrc/torch_bindings.cpp"]["depth"] == "front-end"  # not arch-gated
    assert "also codegen" in r.summary


def test_auto_codegen_stops_at_the_budget_and_keeps_the_front_end(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The estimate fits, cicc then runs far longer (as on CUTLASS sm_120 kernels): the
    # budget is a deadline, and the front end's pass stands.
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CICC_SLEEP", "60")
    # an estimate that always fits, however slow the (loaded) machine runs the front end
    know = dataclasses.replace(probe_units.load_knowledge(), codegen_per_front_end=0.001)
    monkeypatch.setattr(probe_units, "load_knowledge", lambda path=None: know)
    t = time.monotonic()
    gm = "csrc/quantization/gptq_marlin/gptq_marlin.cu"
    r = run(stage, tmp_path / "w", depth="auto", budget_s=8.0, only=[gm])
    assert time.monotonic() - t < 40
    (u,) = r.details["units"]
    assert u["status"] == "pass" and u["depth"] == "front-end", u
    assert "code generation stopped at the 8s budget" in u["note"]
    assert r.status == "pass"


def test_units_needing_an_absent_cutlass_are_not_probed(
    stage: dict[str, object], tmp_path: Path
) -> None:
    r = run(
        stage,
        tmp_path / "work",
        depth="front-end",
        only=["csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu"],
    )
    # `only` takes units outside the selection too; its needs are computed the same way
    (u,) = r.details["units"]
    assert u["status"] == "not-probed" and u["needs"] == ["cutlass"]


def test_not_probed_reports_the_pin_and_the_variable(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = stage["tree"]
    assert isinstance(tree, Path)
    (tree / "csrc" / "layernorm_kernels.cu").write_text(
        '#include "cutlass_extensions/common.hpp"\n'
    )
    (tree / "csrc" / "cache_kernels.cu").write_text('#include "cutlass_extensions/common.hpp"\n')
    r = run(stage, tmp_path / "work", depth="front-end")
    np = [u for u in r.details["units"] if u["status"] == "not-probed"]
    assert np and all(u["needs"] == ["cutlass"] for u in np)
    assert "needs cutlass v3.8.0 (VLLM_CUTLASS_SRC_DIR)" in np[0]["note"]
    assert "not probed (needs cutlass)" in r.summary
    assert any(f.rule == "probe-not-probed" and f.level == "info" for f in r.findings)
    # with the variable set to a tree, the same units are compiled
    cut = tmp_path / "cutlass"
    (cut / "include" / "cutlass").mkdir(parents=True)
    monkeypatch.setenv("VLLM_CUTLASS_SRC_DIR", str(cut))
    r = run(stage, tmp_path / "work2", depth="front-end")
    assert not [u for u in r.details["units"] if u["status"] == "not-probed"]
    assert r.details["externals"]["cutlass"]["origin"] == "$VLLM_CUTLASS_SRC_DIR"


def test_unknown_depth_is_refused(stage: dict[str, object], tmp_path: Path) -> None:
    from vllm_matrix.infra.errors import MatrixError

    with pytest.raises(MatrixError, match="did you mean 'codegen'"):
        run(stage, tmp_path / "w", depth="codegn")


def test_an_arch_the_tree_does_not_build_is_a_warning(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    stage["cell"] = Cell("0.8.4", "2.6.0", "12.4", "debian", "3.12", ("12.0",))
    r = run(stage, tmp_path / "work", depth="front-end")
    assert r.details["cuda_archs"] == []
    (w,) = [f for f in r.findings if f.rule == "probe-no-arch"]
    assert w.level == "warn" and "12.0" in w.message


def test_ctrl_c_stops_the_probe_in_seconds(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SIGINT to the probing process alone (not its compilers' groups), sent while a
    # compiler runs: the units running are ended, the ones queued never start, and
    # KeyboardInterrupt reaches the caller. The probe runs in a process of its own, as a
    # user's would: under pytest-xdist the test need not own the main thread, where Python
    # delivers SIGINT, and a load-dependent timer could fire before or after the compile.
    import pickle
    import signal
    import subprocess

    from vllm_matrix.infra import proc

    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CICC_SLEEP", "60")
    args = tmp_path / "args.pickle"
    args.write_bytes(pickle.dumps((stage, tmp_path / "w", hits(stage["tree"]))))  # type: ignore[arg-type]
    # A process started in the background by a non-interactive shell (nohup ... &, some CI
    # runners) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    # the child restores it, as a terminal's foreground process has it.
    script = (
        "import pickle, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from vllm_matrix.infra import index\nfrom vllm_matrix.stages import probe\n"
        "index.project_files = lambda project: ()\n"
        "s, work, api = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "probe.run_probe(s['cell'], s['tree'], s['facts'], s['tk'], s['tv'], s['fx'], work,\n"
        "                api_hits=api, depth='codegen', jobs=1)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(args)], stderr=subprocess.PIPE, text=True
    )

    def ciccs() -> list[int]:
        return [
            p
            for p in proc.descendants(child.pid)
            if Path(f"/proc/{p}/cmdline").exists()
            and b"cicc" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]

    deadline = time.monotonic() + 120  # however loaded the machine, until cicc runs
    while not ciccs() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ciccs(), (
        f"the probe never reached codegen: {child.stderr.read() if child.stderr else ''}"
    )
    running = ciccs()
    t = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert time.monotonic() - t < 20, "Ctrl-C took longer than 20 s to stop the probe"
    assert "KeyboardInterrupt" in err
    time.sleep(0.5)
    assert not [p for p in running if Path(f"/proc/{p}").exists()]


def test_front_end_cache_skips_an_unchanged_unit_the_second_time(
    stage: dict[str, object], tmp_path: Path
) -> None:
    first = run(stage, tmp_path / "work1", depth="front-end")
    again = run(stage, tmp_path / "work2", depth="front-end")  # another cell's work dir
    u1 = {u["path"]: u for u in first.details["units"] if u["kind"] == "cuda"}
    u2 = {u["path"]: u for u in again.details["units"] if u["kind"] == "cuda"}
    passed = [p for p, u in u1.items() if u["status"] == "pass"]
    assert passed and all(u1[p]["front_end_cache"] == "miss" for p in passed)
    for p in passed:
        assert u2[p]["front_end_cache"] == "hit" and u2[p]["status"] == "pass"
        assert next(s for s in u2[p]["steps"] if s["tool"] == "cudafe++").get("cached")
    # a failing front end is never stored: it runs (and fails) again, with its own log
    failed = [p for p, u in u1.items() if u["status"] == "fail"]
    assert failed and all(u2[p]["status"] == "fail" for p in failed)
    assert all(u2[p]["front_end_cache"] == "miss" for p in failed)
    fc = again.details["front_end_cache"]
    assert fc["hits"] == len(passed) and fc["misses"] == len(failed)
    assert again.status == first.status == "fail"


def test_without_the_front_end_cache_every_front_end_runs(
    stage: dict[str, object], tmp_path: Path
) -> None:
    # --no-front-end-cache (the accuracy study's cold cost): nothing read, nothing stored
    run(stage, tmp_path / "work1", depth="front-end")
    cold = run(stage, tmp_path / "work2", depth="front-end", front_end_cache=False)
    assert cold.details["front_end_cache"] | {"key": ""} == {
        "enabled": False,
        "hits": 0,
        "misses": 0,
        "key": "",
    }
    assert all(u["front_end_cache"] == "" for u in cold.details["units"])
    warm = run(stage, tmp_path / "work3", depth="front-end")
    assert warm.details["front_end_cache"]["enabled"] is True
    assert warm.details["front_end_cache"]["hits"] > 0  # the first run's, not the cold one's


def test_units_all_sweeps_every_built_unit(stage: dict[str, object], tmp_path: Path) -> None:
    sel = run(stage, tmp_path / "w1", depth="front-end")
    full = run(stage, tmp_path / "w2", depth="front-end", units_mode="all")
    chosen = {u["path"] for u in sel.details["units"]}
    swept = {u["path"] for u in full.details["units"]}
    assert chosen < swept  # the selection is a strict subset of the sweep here
    assert all(u["why"] == "all" for u in full.details["units"] if u["path"] not in chosen)
    with pytest.raises(MatrixError, match="did you mean 'all'"):
        run(stage, tmp_path / "w3", units_mode="al")


def test_units_all_stops_at_the_front_end_at_depth_auto(
    stage: dict[str, object], tmp_path: Path
) -> None:
    # depth auto: the selection adds code generation within its budget; the sweep is the
    # front end of every unit (a fast, cache-warm sweep ran codegen of gated units before)
    sel = run(stage, tmp_path / "w1")
    full = run(stage, tmp_path / "w2", units_mode="all")
    assert sel.details["codegen_jobs"] > 0
    assert any(u["depth"] == "codegen" for u in sel.details["units"])
    assert full.details["codegen_jobs"] == 0
    assert all(u["depth"] in ("front-end", "none") for u in full.details["units"])
    assert not any("codegen" in u["note"] for u in full.details["units"])


def test_a_sigint_the_kernel_gives_a_worker_thread_still_stops_run_all() -> None:
    # The kernel may hand a process-directed SIGINT to any thread; Python acts on it only
    # when the main thread runs bytecode. run_all's main thread must not sit in an unbounded
    # wait while a unit runs (it did: `kill -INT` stopped the probe only after the running
    # compiler finished). Sent here to the worker thread itself, in a process of its own.
    import subprocess

    script = (
        "import signal, sys, threading, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # see the test above\n"
        "from vllm_matrix.infra import proc\n"
        "from vllm_matrix.stages.probe import runner\n"
        "workers = []\n"
        "def unit(item):\n"
        "    workers.append(threading.get_ident())\n"
        "    proc.run([sys.executable, '-c', 'import time; time.sleep(20)'], check=False)\n"
        "def poke():\n"
        "    while not workers: time.sleep(0.01)\n"
        "    time.sleep(0.3)\n"
        "    signal.pthread_kill(workers[0], signal.SIGINT)\n"
        "threading.Thread(target=poke, daemon=True).start()\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    runner.run_all(unit, [(None, None)], 1)\n"
        "except KeyboardInterrupt:\n"
        "    print(f'interrupted after {time.monotonic() - t:.1f}s')\n"
        "    sys.exit(0)\n"
        "print('not interrupted')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.startswith("interrupted after"), done.stdout + done.stderr
    assert float(done.stdout.split()[2].rstrip("s")) < 5, done.stdout


# ------------------------------------------------------------------ one translation unit

GM = "csrc/quantization/gptq_marlin/gptq_marlin.cu"


def append(stage: dict[str, object], rel: str, text: str) -> None:
    """Add ``text`` to a file of the stage's tree (made where it is not there)."""
    tree = stage["tree"]
    assert isinstance(tree, Path)
    with (tree / rel).open("a") as f:
        f.write(text)


def cell_torch(stage: dict[str, object], torch: str) -> dict[str, object]:
    return stage | {"cell": dataclasses.replace(stage["cell"], torch=torch)}  # type: ignore[type-var]


def test_front_ends_that_can_share_one_translation_unit_run_once(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch 2.7.0 has Float8_e8m0fnu: nothing is predicted to fail, the three CUDA units
    # (same target, same host front end) run through cudafe++ once
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    r = run(cell_torch(stage, "2.7.0"), tmp_path / "w", depth="front-end")
    assert r.status == "pass"
    assert r.summary.endswith(
        "all passed; front ends of 3 units checked in 1 shared translation unit"
    )
    (called,) = (tmp_path / "calls").read_text().split()
    assert called.startswith("unity-3-")
    cuda = [u for u in r.details["units"] if u["kind"] == "cuda"]
    assert len(cuda) == 3
    for u in cuda:
        assert u["status"] == "pass" and u["depth"] == "front-end"
        assert u["note"] == "front end checked in one translation unit with 3 units"
        grp = u["front_end_group"]
        assert grp["units"] == 3 and Path(grp["log"]).is_file()
        assert [s["phase"] for s in u["steps"]] == ["host-preprocess", "front-end"]
        assert all(s["units"] == 3 for s in u["steps"])
        assert u["front_end_s"] >= u["seconds"]  # the whole front end; its share is seconds
        assert grp["log"] in Path(u["log"]).read_text()
    (unity_file,) = (tmp_path / "w" / "unity").glob("*.cu")
    text = unity_file.read_text()
    assert all(f'#include "{stage["tree"]}/{u["path"]}"' in text for u in cuda)
    # the shared front end's pass is cached like a unit's
    again = run(cell_torch(stage, "2.7.0"), tmp_path / "w2", depth="front-end")
    assert [u["front_end_cache"] for u in again.details["units"] if u["kind"] == "cuda"] == [
        "hit"
    ] * 3


def test_a_shared_front_end_that_fails_falls_back_to_each_unit_alone(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch 2.7.0 by its version, but (fake) headers without the symbol: not predicted,
    # so the shared file runs, fails, and each unit runs alone: the failing unit's label,
    # first error and steps are those of a probe without sharing
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    r = run(cell_torch(stage, "2.7.0"), tmp_path / "w", depth="front-end")
    base = run(stage, tmp_path / "base", depth="front-end", only=[GM])
    calls = (tmp_path / "calls").read_text().split()
    assert calls[0].startswith("unity-3-") and len(calls) == 1 + 3 + 1
    assert (
        r.status == "fail"
        and r.summary == "4 units, front-end, 1 failed: gptq_marlin.cu (Float8_e8m0fnu)"
    )
    units = {u["path"]: u for u in r.details["units"]}
    gm, (b,) = units[GM], base.details["units"]
    assert gm["status"] == "fail" and gm["front_end_group"] is None
    assert gm["first_error"].replace("/w/", "/base/") == b["first_error"]
    assert [s["phase"] for s in gm["steps"]] == ["host-preprocess", "front-end"]
    assert [f.rule for f in r.findings if f.level == "fail"] == [
        f.rule for f in base.findings if f.level == "fail"
    ]
    for u in units.values():
        if u["kind"] == "cuda":
            assert u["note"].startswith("front end checked alone: one translation unit with 3")
            assert u["status"] == ("fail" if u["path"] == GM else "pass")


def test_a_unit_predicted_to_fail_runs_first_and_alone(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch 2.6.0 predates Float8_e8m0fnu, which the API scan found in gptq_marlin.cu:
    # with one job it is compiled first, alone; the others share a translation unit
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    r = run(stage, tmp_path / "w", depth="front-end", jobs=1)
    assert (tmp_path / "calls").read_text().split()[0] == "gptq_marlin.cpp4.ii"
    assert r.summary == (
        "4 units, front-end, 1 failed: gptq_marlin.cu (Float8_e8m0fnu); "
        "front ends of 2 units checked in 1 shared translation unit"
    )
    units = {u["path"]: u for u in r.details["units"]}
    assert units[GM]["api_torch"] == ["2.7.0"] and units[GM]["note"] == ""
    # the rows keep the selection's order, whatever order they ran in
    assert list(units)[:2] == ["csrc/torch_bindings.cpp", GM]


def test_a_macro_two_units_define_makes_each_unit_run_alone(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gcc -E of the shared file warns that a macro is redefined (two units' headers define
    # it): no cudafe++ on the shared file, each unit alone
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    for u in ("csrc/layernorm_kernels.cu", "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm90.cu"):
        append(stage, u, "#define CLASH 1\n")
    r = run(cell_torch(stage, "2.7.0"), tmp_path / "w", depth="front-end")
    assert r.status == "pass" and "shared" not in r.summary
    calls = (tmp_path / "calls").read_text().split()
    assert len(calls) == 3 and not any(c.startswith("unity-") for c in calls)
    (log,) = (tmp_path / "w" / "logs").glob("unity__*.log")
    assert "# unsound as one translation unit: CLASH redefined" in log.read_text()


def test_units_that_conflict_share_translation_units_apart(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a header of one unit #defines a name another unit declares (vLLM 0.4.2's WARP_SIZE):
    # found from the include closures before any gcc -E, the two go to different
    # translation units and the third joins one of them
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    append(stage, "csrc/compat_x.h", "#pragma once\n#define WARP_SIZE 32\n")
    append(stage, "csrc/layernorm_kernels.cu", '#include "compat_x.h"\n')
    append(
        stage,
        "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm90.cu",
        "static constexpr int WARP_SIZE = 32;\n",
    )
    r = run(cell_torch(stage, "2.7.0"), tmp_path / "w", depth="front-end")
    assert r.status == "pass"
    calls = (tmp_path / "calls").read_text().split()
    assert len(calls) == 2 and sum(c.startswith("unity-2-") for c in calls) == 1
    (unity_file,) = (tmp_path / "w" / "unity").glob("*.cu")
    text = unity_file.read_text()
    assert not ("layernorm_kernels.cu" in text and "scaled_mm_c3x_sm90.cu" in text)
    assert r.summary.endswith("front ends of 2 units checked in 1 shared translation unit")
