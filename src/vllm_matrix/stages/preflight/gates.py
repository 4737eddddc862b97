"""Arch-gated kernel families in a vLLM CMakeLists.txt, as the CMake evaluator reads them.

vLLM builds some kernels only for certain arches *and* only with a new enough nvcc:
    cuda_archs_loose_intersection(SCALED_MM_ARCHS "12.0;12.0a" "${CUDA_ARCHS}")
    if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND SCALED_MM_ARCHS)
      set(SRCS "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm120.cu" ...)
Each such pair is a Gate: which arches, which nvcc, which sources, where. The evaluator
(cmake/survey.py) records them while it runs the tree's CMake at every nvcc the tree tells
apart, the same evaluator whose families the probe compiles: preflight and probe agree.
"""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.cmake.model import Gate
from vllm_matrix.cmake.survey import survey

__all__ = ["Gate", "for_arch", "gates"]


def gates(tree: Path) -> tuple[Gate, ...]:
    if not (tree / "CMakeLists.txt").is_file():
        return ()
    return survey(tree).gates


def for_arch(all_gates: tuple[Gate, ...], arch: str) -> tuple[Gate, ...]:
    """Gates whose arch list names ``arch`` (with or without an a/f suffix)."""
    base = arch.rstrip("af")
    return tuple(g for g in all_gates if any(a.rstrip("af") == base for a in g.archs))
