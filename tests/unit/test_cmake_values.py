"""CMake values: generator expressions."""

from __future__ import annotations

from vllm_matrix.cmake import values


def test_genex() -> None:
    text = "$<$<COMPILE_LANGUAGE:CUDA>:-DA;-DB>;-DC;$<BUILD_INTERFACE:inc>;$<INSTALL_INTERFACE:x>"
    assert values.eval_genex(text, "CUDA") == "-DA;-DB;-DC;inc;"
    assert values.eval_genex(text, "CXX") == ";-DC;inc;"
