"""The partial build's scheduler: longest compile edges first in build.ninja, nvcc --threads
for edges of several virtual archs, and what the order predicts (list scheduling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_matrix.stages.compile import partial, schedule

C2X = (
    "CMakeFiles/_C_stable_libtorch.dir/csrc/libtorch_stable/quantization/w8a8/cutlass/"
    "scaled_mm_c2x.cu.o"
)


def _ninja(tmp: Path) -> str:
    (tmp / "a.cu").write_text('#include "cutlass/gemm/gemm.h"\n')
    (tmp / "b.cu").write_text("__global__ void k() {}\n")
    return f"""# CMAKE generated file
ninja_required_version = 1.5
include CMakeFiles/rules.ninja
build CMakeFiles/_C.dir/b.cu.o: CUDA_COMPILER__C_unscanned_Release {tmp}/b.cu || $
    cmake_object_order_depends_target__C
  DEFINES = -DX
  FLAGS = -O3 --threads=1 -gencode arch=compute_90a,code=sm_90a
  OBJECT_DIR = CMakeFiles/_C.dir
build CMakeFiles/_C.dir/a.cu.o: CUDA_COMPILER__C_unscanned_Release {tmp}/a.cu
  FLAGS = -O3 --threads=1 -gencode arch=compute_90a,code=sm_90a
build {C2X}: CUDA_COMPILER___C_stable_libtorch_unscanned_Release {tmp}/b.cu
  FLAGS = -O3 --threads=1 --generate-code=arch=compute_89,code=[compute_89,sm_89]
build CMakeFiles/_C.dir/two.cu.o: CUDA_COMPILER__C_unscanned_Release {tmp}/b.cu
  FLAGS = -O3 --threads=1 -gencode arch=compute_80,code=sm_80 $
    -gencode arch=compute_90a,code=sm_90a
build _C.abi3.so: CUDA_SHARED_LIBRARY_LINKER___C_Release CMakeFiles/_C.dir/b.cu.o $
    CMakeFiles/_C.dir/a.cu.o
  LINK_FLAGS = -shared
"""


def test_statements_join_back_exactly(tmp_path: Path) -> None:
    text = _ninja(tmp_path)
    stmts = schedule.split_statements(text)
    assert "".join(stmts) == text
    assert sum(schedule.is_compile(s) for s in stmts) == 4  # the link is not a compile edge


def test_device_outputs_and_virtual_archs() -> None:
    assert schedule.device_outputs("--generate-code=arch=compute_89,code=[compute_89,sm_89]") == 2
    assert schedule.virtual_archs("--generate-code=arch=compute_89,code=[compute_89,sm_89]") == 1
    two = "-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a"
    assert schedule.device_outputs(two) == 2 and schedule.virtual_archs(two) == 2


def test_longest_first_recorded_before_estimated_stable_ties(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(_ninja(tmp_path))
    info = schedule.plan_for(tmp_path, {C2X: 836.8}, jobs=2, max_threads=4)
    order = [o["edge"] for o in info["order"]]
    # c2x (recorded 836.8 s) first; a.cu includes CUTLASS: 60 s x 4; b.cu and two.cu tie at
    # 60 and 120 s (two device outputs) -> two.cu before b.cu; ties keep build.ninja order.
    assert order == [
        C2X,
        "CMakeFiles/_C.dir/a.cu.o",
        "CMakeFiles/_C.dir/two.cu.o",
        "CMakeFiles/_C.dir/b.cu.o",
    ]
    assert [o["how"] for o in info["order"]] == ["recorded", "estimated", "estimated", "estimated"]
    text = (tmp_path / "build.ninja").read_text()
    # The same statements, reordered: bindings travel with their edge, the rest stays put.
    assert sorted(schedule.split_statements(text)) != [] and text.index(C2X) < text.index("a.cu.o")
    assert text.index("include CMakeFiles/rules.ninja") < text.index("build ")
    assert text.rstrip().endswith("LINK_FLAGS = -shared")
    # Only the edge of two virtual archs gets nvcc threads (c2x's two outputs share one cicc).
    assert info["threaded"] == [{"edge": "CMakeFiles/_C.dir/two.cu.o", "threads": 2}]
    assert "--threads=2 -gencode arch=compute_80" in text
    assert (tmp_path / schedule.ORIGINAL).read_text() == _ninja(tmp_path)
    assert json.loads((tmp_path / schedule.SCHEDULE_JSON).read_text())["compile_edges"] == 4


def test_prediction_before_after_and_packed_limit(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(_ninja(tmp_path))
    p = schedule.plan_for(tmp_path, {C2X: 836.8}, jobs=2)["predicted"]
    # before (build.ninja order, 2 slots): b 60 | a 240, then c2x on the slot free at 60 ->
    # ends 896.8; after: c2x at 0, the rest on the other slot -> 836.8 = the longest edge.
    assert p["makespan_before_s"] == 896.8 and p["longest_starts_before_s"] == 60.0
    assert p["makespan_after_s"] == 836.8 == p["packed_limit_s"]
    assert p["longest_starts_after_s"] == 0.0


def test_prediction_counts_only_the_targets_built(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(_ninja(tmp_path))
    p = schedule.plan_for(tmp_path, {C2X: 836.8}, jobs=2, targets=["_C"])["predicted"]
    assert p["edge_seconds"] == 420.0 and p["longest_edge_s"] == 240.0


def test_ninja_log_times_beat_estimates(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(_ninja(tmp_path))
    (tmp_path / ".ninja_log").write_text(
        "# ninja log v6\n0\t900000\t0\tCMakeFiles/_C.dir/b.cu.o\tabc\n"
    )
    info = schedule.plan_for(tmp_path, {}, jobs=4, write=False)
    assert info["order"][0] == {
        "edge": "CMakeFiles/_C.dir/b.cu.o",
        "seconds": 900.0,
        "how": "recorded",
    }
    assert not (tmp_path / schedule.SCHEDULE_JSON).exists()  # write=False writes nothing


def test_simulate_is_list_scheduling() -> None:
    assert schedule.simulate([5, 1, 1, 1], 2) == (5, [0, 0, 1, 2])
    assert schedule.simulate([1, 1, 1, 5], 2) == (6.0, [0, 0, 1, 1])
    assert schedule.packed_limit([10, 10, 10, 10], 2) == 20
    assert schedule.packed_limit([30, 1, 1], 16) == 30


def test_outcome_reads_the_measured_edges(tmp_path: Path) -> None:
    (tmp_path / ".ninja_log").write_text(
        "# ninja log v6\n3\t761391\t0\t" + C2X + "\th\n10\t2000\t0\tCMakeFiles/_C.dir/b.cu.o\th\n"
        "761400\t762000\t0\t_C_stable_libtorch.abi3.so\th\n"
    )
    m = schedule.outcome([tmp_path])["measured"]
    assert m["compile_edges"] == 2 and m["longest_edge"] == C2X
    assert m["longest_started_s"] == 0.003 and m["span_s"] == 761.4


def test_recorded_times_of_a_release() -> None:
    assert schedule.recorded_times("0.20.0")[C2X] > 600
    assert schedule.recorded_times("0.0.1") == {}


def test_the_driver_hooks_cmake_build_only() -> None:
    """The setup.py driver reorders build.ninja when setup.py runs `cmake --build`."""
    code = partial.PARTIAL_DRIVER.read_text()
    compile(code, "driver", "exec")
    assert 'str(args[0]).endswith("cmake")' in code and '"--build" in args' in code


@pytest.mark.parametrize("bad", ["build : phony", "rule cc\n  command = x\n"])
def test_non_edges_are_no_compile_edges(bad: str) -> None:
    assert not schedule.is_compile(bad)
