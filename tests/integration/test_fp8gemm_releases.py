"""fp8gemm.answer on real vLLM sdists: the FP8 GEMM each release dispatches per arch, read
from its scaled_mm_entry.cu and its CMake (evaluated), with file:line."""

from __future__ import annotations

import pytest

from vllm_matrix.knowledge import toolchains
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.preflight import fp8gemm
from vllm_matrix.stages.probe.configure import build_model

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]


def _answer(version: str, arch: str, cuda: str) -> fp8gemm.Answer:
    root = source.sdist_tree(version).root
    nvcc, _ = fp8gemm.nvcc_for_scan(cuda, arch, toolchains.load())
    return fp8gemm.answer(root, arch, nvcc, build_model(root, nvcc, (arch,), python="3.12"))


def test_0_8_5_sends_sm120_to_the_sm100_tcgen05_kernels() -> None:
    a = _answer("0.8.5", "12.0", "12.8")
    assert a.ok is False and a.depth == fp8gemm.SOURCE_SCAN
    assert a.short.startswith("no: cc ≥ 100 goes to cutlass_scaled_mm_sm100")
    assert "sm_120 lacks" in a.short
    ev = "\n".join(a.evidence)
    assert "csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu:156" in ev
    # built for 12.0a all the same: the kernel is compiled, its body is not sm_120's
    assert "built for 12.0a at CMakeLists.txt:373 (10.0a;10.1a;12.0a, nvcc ≥ 12.8 (CMake" in ev
    assert "static_scaled_fp8_quant (csrc/quantization/fp8/common.cu): built for 12.0" in ev


@pytest.mark.parametrize("version", ["0.9.2", "0.10.0", "0.10.1", "0.20.0"])
def test_later_releases_dispatch_sm120_to_their_sm120_kernels(version: str) -> None:
    a = _answer(version, "12.0", "12.8")
    assert a.ok is True, a.short
    assert a.short.startswith("yes: cutlass_scaled_mm_sm120 → scaled_mm_sm120_fp8.cu")
    assert any("cc ≥ 120 → cutlass_scaled_mm_sm120" in e for e in a.evidence)


@pytest.mark.parametrize("version", ["0.8.5", "0.10.1", "0.20.0"])
def test_hopper_goes_to_the_sm90_kernels(version: str) -> None:
    a = _answer(version, "9.0", "12.4")
    assert a.ok is True and "cutlass_scaled_mm_sm90" in a.short and "(Sm90)" in a.short


def test_an_nvcc_that_cannot_reach_the_arch_is_replaced_and_said() -> None:
    nvcc, why = fp8gemm.nvcc_for_scan("12.4", "12.0", toolchains.load())
    assert nvcc == "12.8.1" and why == "nvcc 12.4 cannot target sm_120"
