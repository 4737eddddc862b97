"""probe includes: the include closure, the externals and generated headers a unit needs."""

from __future__ import annotations

from pathlib import Path

from probe_trees import (
    make_tree,
)

from vllm_matrix.knowledge import probe_units
from vllm_matrix.stages.probe import includes


def test_cutlass_need_is_found_through_headers(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    know = probe_units.load_knowledge()
    files, needs = includes.include_closure(
        tree, "csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu", [tree / "csrc"], know
    )
    assert "csrc/cutlass_extensions/common.hpp" in files
    assert needs == {"cutlass": "csrc/cutlass_extensions/common.hpp: #include <cutlass/cutlass.h>"}


def test_a_header_the_build_generates_is_a_need_not_a_failure(tmp_path: Path) -> None:
    # vLLM 0.20's marlin units include kernel_selector.h, which generate_kernels.py writes
    # from CMake at configure time: the probe (which runs no generator) must say so.
    tree = tmp_path / "tree"
    marlin = tree / "csrc" / "quantization" / "marlin"
    marlin.mkdir(parents=True)
    (marlin / "generate_kernels.py").write_text('open("kernel_selector.h", "w").write(x)\n')
    (marlin / "marlin.cu").write_text('#include <vector>\n#include "kernel_selector.h"\n')
    know = probe_units.load_knowledge()
    _, needs = includes.include_closure(tree, "csrc/quantization/marlin/marlin.cu", [], know)
    assert needs == {
        includes.GENERATED: "csrc/quantization/marlin/marlin.cu: #include kernel_selector.h, "
        "written by csrc/quantization/marlin/generate_kernels.py at build time"
    }
    assert includes.generator_of(tree.resolve(), "vector") is None  # a system header
    assert includes.generator_of(tree.resolve(), "other.h") is None


def test_a_header_named_only_by_cmake_or_with_a_directory_is_not_generated(
    tmp_path: Path,
) -> None:
    # vLLM 0.27: torch_utils.h includes torch/csrc/inductor/aoti_torch/c/shim.h (torch's own
    # header, outside the tree) and deepgemm.cmake names shim.h: not a generated file.
    tree = tmp_path / "tree"
    (tree / "cmake").mkdir(parents=True)
    (tree / "cmake" / "deepgemm.cmake").write_text("# copies shim.h\n")
    (tree / "csrc").mkdir()
    (tree / "csrc" / "gen.py").write_text("# writes shim.h\n")
    (tree / "csrc" / "u.cu").write_text('#include "torch/csrc/inductor/aoti_torch/c/shim.h"\n')
    _, needs = includes.include_closure(tree, "csrc/u.cu", [], probe_units.load_knowledge())
    assert needs == {}
    assert includes.generator_of(tree.resolve(), "x.h") is None
