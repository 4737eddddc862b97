"""The survey: the CMake evaluator run at every nvcc a tree's conditions tell apart."""

from __future__ import annotations

import textwrap
from pathlib import Path

from vllm_matrix.cmake import model
from vllm_matrix.cmake.survey import FLOOR, survey

ARCH_RULES = """
    cmake_minimum_required(VERSION 3.26)
    if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0)
      set(CUDA_SUPPORTED_ARCHS "7.5;12.0f")
    elseif(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER 12.8)
      set(CUDA_SUPPORTED_ARCHS "7.0;12.0")
    else()
      set(CUDA_SUPPORTED_ARCHS "7.0;9.0")
    endif()
"""


def _tree(tmp_path: Path, text: str) -> Path:
    (tmp_path / "CMakeLists.txt").write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path


def test_every_nvcc_branch_is_run_once(tmp_path: Path) -> None:
    sv = survey(_tree(tmp_path, ARCH_RULES))
    # below every threshold; 13.0 (GREATER_EQUAL: 13.0 and 13.0.1 answer alike); 12.8 and
    # 12.8.1, which VERSION_GREATER 12.8 tells apart
    assert sv.samples == (FLOOR, "12.8", "12.8.1", "13.0")
    got = [(a.line, a.values, nvcc) for a, nvcc in sv.branches("CUDA_SUPPORTED_ARCHS")]
    assert got == [
        (3, ("7.5;12.0f",), "13.0"),
        (5, ("7.0;12.0",), "12.8.1"),
        (7, ("7.0;9.0",), FLOOR),
    ]
    assert sv.minimum == ("3.26", "CMakeLists.txt:1")


GATES = """
    if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0)
      cuda_archs_loose_intersection(FP4_ARCHS "12.0f" "${CUDA_ARCHS}")
    else()
      cuda_archs_loose_intersection(FP4_ARCHS "12.0a;12.1a" "${CUDA_ARCHS}")
    endif()
    if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND FP4_ARCHS)
      set(SRCS "csrc/fp4/nvfp4_sm120.cu")
    endif()
    cuda_archs_loose_intersection(MLA_ARCHS
      "10.0a" "${CUDA_ARCHS}")
    # a comment, a blank line and an unrelated set() between the two


    set(UNRELATED ON)
    if(MLA_ARCHS AND "${CMAKE_CUDA_COMPILER_VERSION}" VERSION_GREATER 12.8)
      set(MLA_SRCS "${CMAKE_CURRENT_SOURCE_DIR}/csrc/mla/sm100.cu" "csrc/mla/common.cuh")
    endif()
"""


def test_gates_are_what_the_evaluator_meets(tmp_path: Path) -> None:
    """Both arms of an nvcc-dependent intersection, a call over two lines, the nvcc test
    second and 7 lines below the call: each a gate with its sources as evaluated."""
    sv = survey(_tree(tmp_path, GATES))
    got = [(g.var, g.archs, g.op, g.nvcc, g.sources, g.line) for g in sv.gates]
    assert got == [
        ("FP4_ARCHS", ("12.0f",), ">=", "12.8", ("csrc/fp4/nvfp4_sm120.cu",), 2),
        ("FP4_ARCHS", ("12.0a", "12.1a"), ">=", "12.8", ("csrc/fp4/nvfp4_sm120.cu",), 4),
        ("MLA_ARCHS", ("10.0a",), ">", "12.8", ("csrc/mla/sm100.cu",), 9),
    ]


def test_built_for_reads_cmakes_real_and_virtual_spellings() -> None:
    """vLLM 0.6.1 … 0.6.2's CMake puts CUDA_ARCHITECTURES forms ("90-real") in its lists:
    they ended the whole preflight in ERROR ("'90-real' is not a GPU arch")."""
    assert model.built_for(["80-real", "90-real"], 90) == ("90-real",)
    assert model.built_for(["80-virtual"], 90) == ("80-virtual",)  # PTX JITs forward
    assert model.built_for(["90-real"], 120) == ()
    assert model.built_for(["8.9+PTX", "9.0a"], 90) == ("8.9+PTX", "9.0a")
    fam = model.Family("SCALED_MM_ARCHS", "SRCS", ("9.0-real", "12.0a"), (), "x:1")
    assert fam.built_for(120) == ("12.0a",)
