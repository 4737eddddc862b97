"""probe configure: the build model a tree's CMake gives for (nvcc, arches, torch)."""

from __future__ import annotations

from pathlib import Path

from probe_trees import (
    make_facts,
    make_tree,
)

from vllm_matrix.stages import probe
from vllm_matrix.stages.probe.units import unit_archs


def test_model_for_sm90_nvcc_12_4(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    m = probe.build_model(tree, "12.4.131", ("9.0",))
    assert m.cuda_archs == ("9.0",)
    fams = {f.arch_var: f for f in m.families}
    assert fams["MARLIN_ARCHS"].archs == ("9.0+PTX",) and fams["MARLIN_ARCHS"].gated
    assert fams["SCALED_MM_ARCHS"].archs == ("9.0a",)
    assert "FP4_ARCHS" not in fams  # 12.0 kernels need nvcc >= 12.8 and a 12.x arch
    assert not fams["CUDA_ARCHS"].gated
    (c,) = m.targets
    assert c.name == "_C" and c.sabi == "3"
    assert "csrc/torch_bindings.cpp" in c.sources
    assert "CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1" in c.definitions
    assert m.skipped_includes == ("cmake/external_projects/vllm_flash_attn.cmake",)
    assert any("kernel_*.cu" in g for g in m.empty_globs)
    assert not m.fatal
    assert unit_archs(m, "csrc/quantization/gptq_marlin/gptq_marlin.cu") == (
        "sm_90",
        "compute_90",
    )


def test_model_for_sm120_needs_nvcc_12_8(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    old = probe.build_model(tree, "12.4.131", ("12.0",))
    assert old.cuda_archs == ()  # CUDA_SUPPORTED_ARCHS stops at 9.0 before 12.8
    new = probe.build_model(tree, "12.8.61", ("12.0",))
    fams = {f.arch_var: f for f in new.families}
    assert new.cuda_archs == ("12.0",) and fams["FP4_ARCHS"].archs == ("12.0a",)
    assert "MARLIN_ARCHS" in fams and fams["MARLIN_ARCHS"].archs == ("9.0+PTX",)
    gm = "csrc/quantization/gptq_marlin/gptq_marlin.cu"
    assert new.source_props[gm]["COMPILE_FLAGS"] == "-static-global-template-stub=false"


def test_old_trees_take_arches_from_the_target(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "csrc").mkdir(parents=True)
    (tree / "csrc" / "a.cu").write_text("")
    (tree / "csrc" / "pybind.cpp").write_text("")
    (tree / "CMakeLists.txt").write_text(
        "add_library(_C MODULE csrc/a.cu csrc/pybind.cpp)\n"
        'set_target_properties(_C PROPERTIES CUDA_ARCHITECTURES "80-real;90")\n'
    )
    m = probe.build_model(tree, "12.4.131", ("8.0",))
    (fam,) = m.families
    assert fam.arch_var == "target _C" and not fam.gated and fam.sources == ("csrc/a.cu",)
    assert unit_archs(m, "csrc/a.cu") == ("sm_80", "sm_90", "compute_90")
    units = probe.select_units(tree, make_facts(), ("8.0",), "12.4.131", [])
    assert [u.path for u in units] == ["csrc/pybind.cpp", "csrc/a.cu"]


def test_vllm_0_4_sets_its_arches_on_the_target() -> None:
    # vLLM 0.4.2's own CMake (tests/unit/cmake/vllm-0.4.2: excerpts of its CMakeLists.txt and
    # cmake/utils.cmake): no CUDA_ARCHS; override_gpu_arches filters torch's -gencode by
    # CUDA_SUPPORTED_ARCHS into each target's CUDA_ARCHITECTURES. Its wheel has sm_80 SASS.
    tree = Path(__file__).parent / "cmake" / "vllm-0.4.2"
    m = probe.build_model(tree, "12.4.131", ("8.0",), python="3.11")
    assert m.cuda_archs == ("8.0",) and not m.fatal
    assert {t.name: t.cuda_architectures for t in m.targets} == {
        "_C": ("80-real",),
        "_moe_C": ("80-real",),
    }
    assert probe.build_model(tree, "12.4.131", ("8.0", "9.0"), python="3.11").cuda_archs == (
        "8.0",
        "9.0",
    )
    # sm_120 is not in its CUDA_SUPPORTED_ARCHS: nothing is built, rightly.
    assert probe.build_model(tree, "12.4.131", ("12.0",), python="3.11").cuda_archs == ()
