"""CMake evaluation: vLLM's own utils.cmake functions, conditions, scopes, generator
expressions, run by the interpreter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from probe_trees import (
    UTILS,
)

from vllm_matrix.cmake import values
from vllm_matrix.cmake.evaluate import CMake


def evaluate(tmp: Path, body: str, utils: str = UTILS) -> CMake:
    (tmp / "cmake").mkdir(parents=True, exist_ok=True)
    (tmp / "cmake" / "utils.cmake").write_text(utils)
    (tmp / "CMakeLists.txt").write_text(
        "include(${CMAKE_CURRENT_LIST_DIR}/cmake/utils.cmake)\n" + body
    )
    cm = CMake(tmp, {"CMAKE_CURRENT_SOURCE_DIR": str(tmp)}, {}, lambda expr: "", {}, {})
    cm.run_file(tmp / "CMakeLists.txt")
    return cm


@pytest.mark.parametrize(
    ("src", "tgt", "want"),
    [
        # the example in vLLM's comment above cuda_archs_loose_intersection; the code
        # (not the comment, which says "8.0;8.6;9.0;9.0a") puts the "a" arch first
        ("7.5;8.0;8.6;9.0;9.0a", "8.0;8.9;9.0", "9.0a;8.0;8.6"),
        ("8.0+PTX", "9.0", "8.0+PTX"),
        ("8.0;8.7;9.0+PTX", "9.0", "9.0+PTX"),
        ("9.0a;", "9.0", "9.0a"),
        ("9.0a;", "8.0;8.9", ""),
        ("12.0;12.0a", "9.0", ""),
        # SASS is forward compatible within a major only
        ("8.0;8.6;8.9", "12.0", ""),
    ],
)
def test_loose_intersection_is_vllms_own(tmp_path: Path, src: str, tgt: str, want: str) -> None:
    cm = evaluate(tmp_path, f'cuda_archs_loose_intersection(OUT "{src}" "{tgt}")\n')
    assert (cm.get("OUT") or "") == want


def test_extract_archs_from_torch_gencode_flags(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path,
        'set(CMAKE_CUDA_FLAGS "-DX -gencode arch=compute_90,code=sm_90 '
        '-gencode arch=compute_80,code=sm_80 -Xcudafe --diag_suppress=a")\n'
        # a macro: its body names CUDA_ARCH_FLAGS literally, whatever the argument
        "clear_cuda_arches(IGNORED)\n"
        'extract_unique_cuda_archs_ascending(ARCHS "${CUDA_ARCH_FLAGS}")\n',
    )
    assert cm.get("ARCHS") == "8.0;9.0"  # string_to_ver's \\( \\) regex groups work
    assert "gencode" not in (cm.get("CMAKE_CUDA_FLAGS") or "")


def test_gencode_flags_per_source_with_ptx(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path, 'set_gencode_flags_for_srcs(SRCS "a.cu;b.cu" CUDA_ARCHS "8.0;9.0+PTX")\n'
    )
    opts = values.eval_genex(";".join(cm.src_options["a.cu"]), "CUDA")
    assert opts.split(";") == [
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_90,code=sm_90",
        "-gencode",
        "arch=compute_90,code=compute_90",
    ]
    assert values.eval_genex(";".join(cm.src_options["b.cu"]), "CXX") == ";;"


def test_conditions_precedence_and_versions(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path,
        "set(V 12.4.131)\nset(A ON)\n"
        "if(${V} VERSION_GREATER_EQUAL 12.0 AND A)\n  set(R1 yes)\nendif()\n"
        "if(NOT V VERSION_LESS 12.8 OR NOT A)\n  set(R2 yes)\nelse()\n  set(R2 no)\nendif()\n"
        'if(DEFINED ENV{NOPE} OR "x" STREQUAL "x")\n  set(R3 yes)\nendif()\n'
        "if(UNDEFINED_THING)\n  set(R4 yes)\n"
        'elseif("9.0a" MATCHES "\\\\a$")\n  set(R4 a)\nendif()\n'
        "foreach(x 1 2 3)\n  if(x EQUAL 2)\n    break()\n  endif()\n  list(APPEND L ${x})\n"
        "endforeach()\n",
    )
    assert cm.get("R1") == "yes" and cm.get("R2") == "no" and cm.get("R3") == "yes"
    assert cm.get("R4") == "a"  # CMake's \\a is a literal "a", not Python's bell
    assert cm.get("L") == "1"


def test_functions_have_their_own_scope_and_parent_scope(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path,
        "function(f OUT)\n  set(LOCAL 1)\n  set(${OUT} done PARENT_SCOPE)\nendfunction()\n"
        "macro(m X)\n  set(FROM_MACRO ${X})\nendmacro()\n"
        "f(RES)\nm(hello)\n",
    )
    assert cm.get("RES") == "done" and cm.get("LOCAL") is None
    assert cm.get("FROM_MACRO") == "hello"
