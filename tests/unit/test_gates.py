from __future__ import annotations

from pathlib import Path

from vllm_matrix.stages.preflight import gates

CMAKE = """
  # The cutlass_scaled_mm kernels for Geforce Blackwell SM120 require CUDA 12.8 or later
  cuda_archs_loose_intersection(SCALED_MM_ARCHS "12.0;12.0a" "${CUDA_ARCHS}")
  if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND SCALED_MM_ARCHS)
    set(SRCS
      "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm120.cu"
      "csrc/quantization/cutlass_w8a8/c3x/scaled_mm_sm120_fp8.cu"
    )
  endif()
  cuda_archs_loose_intersection(MARLIN_ARCHS "8.0;8.6;9.0;12.0" "${CUDA_ARCHS}")
  cuda_archs_loose_intersection(SCALED_MM_ARCHS "10.0a;10.1a;12.0a" "${CUDA_ARCHS}")
  if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER 12.8 AND SCALED_MM_ARCHS)
    set(SRCS "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm100.cu")
  endif()
"""


def test_gates_pair_the_intersection_with_its_nvcc_condition(tmp_path: Path) -> None:
    (tmp_path / "CMakeLists.txt").write_text(CMAKE)
    found = gates.gates(tmp_path)
    assert [(g.var, g.op, g.nvcc, g.line) for g in found] == [
        ("SCALED_MM_ARCHS", ">=", "12.8", 3),
        ("SCALED_MM_ARCHS", ">", "12.8", 11),
    ]
    assert found[0].sources == (
        "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm120.cu",
        "csrc/quantization/cutlass_w8a8/c3x/scaled_mm_sm120_fp8.cu",
    )
    assert found[0].built_with("12.8") and not found[0].built_with("12.4")
    assert found[1].built_with("13.0")  # "> 12.8" holds for 12.8.x releases and later
    assert len(gates.for_arch(found, "12.0")) == 2 and not gates.for_arch(found, "8.0")


def test_no_cmakelists_no_gates(tmp_path: Path) -> None:
    assert gates.gates(tmp_path) == ()
