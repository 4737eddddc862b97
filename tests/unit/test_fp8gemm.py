"""stages/preflight/fp8gemm.py: the dispatch reading, the arch-tag table, the audit's
confirmation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.stages.preflight import fp8gemm

# The shape of vLLM 0.8.5's cutlass_scaled_mm (scaled_mm_entry.cu:132-196), shortened.
ENTRY_085 = """\
void cutlass_scaled_mm_sm100(torch::Tensor& c);
void cutlass_scaled_mm(torch::Tensor& c, torch::Tensor const& a) {
  int32_t version_num = get_sm_version_num();
#if defined ENABLE_SCALED_MM_SM100 && ENABLE_SCALED_MM_SM100
  if (version_num >= 100) {
    cutlass_scaled_mm_sm100(c, a, b, a_scales, b_scales, bias);
    return;
  }
#endif
#if defined ENABLE_SCALED_MM_SM90 && ENABLE_SCALED_MM_SM90
  if (version_num >= 90 && version_num < 100) {
    // Hopper
    cutlass_scaled_mm_sm90(c, a, b, a_scales, b_scales, bias);
    return;
  }
#endif
#if defined ENABLE_SCALED_MM_C2X && ENABLE_SCALED_MM_C2X
  if (version_num == 89) {
    cutlass_scaled_mm_sm89(c, a, b, a_scales, b_scales, bias);
    return;
  }
  if (version_num >= 80) {
    cutlass_scaled_mm_sm80(c, a, b, a_scales, b_scales, bias);
    return;
  }
#endif
  TORCH_CHECK_NOT_IMPLEMENTED(false, "No compiled cutlass_scaled_mm", version_num);
}

void cutlass_moe_mm(torch::Tensor& out) {
  if (version_num >= 90) { cutlass_moe_mm_sm90(out); }
}
"""


def test_dispatch_reads_branches_in_order_with_their_guards() -> None:
    bs = fp8gemm.dispatch(ENTRY_085)
    assert [(b.callee, b.guard, b.line) for b in bs] == [
        ("cutlass_scaled_mm_sm100", "ENABLE_SCALED_MM_SM100", 5),
        ("cutlass_scaled_mm_sm90", "ENABLE_SCALED_MM_SM90", 11),
        ("cutlass_scaled_mm_sm89", "ENABLE_SCALED_MM_C2X", 18),
        ("cutlass_scaled_mm_sm80", "ENABLE_SCALED_MM_C2X", 22),
    ]
    first = next(b for b in bs if b.matches(120))
    assert first.callee == "cutlass_scaled_mm_sm100" and first.text() == "cc ≥ 100"
    assert next(b for b in bs if b.matches(90)).text() == "cc 90–99"
    assert next(b for b in bs if b.matches(89)).text() == "cc 89"


def test_the_arch_tag_table_knows_sm100_is_not_sm120() -> None:
    t = fp8gemm.tags()
    assert t["Sm100"].runs_on(100) and not t["Sm100"].runs_on(120)
    assert t["Sm120"].runs_on(120) and not t["Sm120"].runs_on(100)
    assert t["Sm89"].runs_on(120) and not t["Sm89"].runs_on(86)
    assert t["Sm90"].runs_on(90) and not t["Sm90"].runs_on(100)
    assert all(x.source for x in t.values())


AUDIT = (
    Path(__file__).parents[2]
    / "reports/device/vllm0.20.0-torch2.11.0-cu13.0-py3.12-sm90a_sm120a-current.json"
)


def _objects() -> list[dict[str, object]]:
    d = json.loads(AUDIT.read_text())
    audit = next(s for s in d["stages"] if s["stage"] == "audit")
    return list(audit["details"]["fp8_gemm_objects"])


def _yes() -> fp8gemm.Answer:
    return fp8gemm.Answer(
        "12.0",
        True,
        "yes: cutlass_scaled_mm_sm120 → scaled_mm_sm120_fp8.cu (Sm120)",
        ("route",),
        ("csrc/x/c3x/scaled_mm_sm120_fp8.cu",),
    )


def test_an_audit_with_qmma_in_the_kernel_object_deepens_a_yes() -> None:
    got = fp8gemm.confirm(_yes(), _objects(), "NVIDIA H200, 16 cores")
    assert got.depth == fp8gemm.AUDITED and got.column.endswith("[audited object]")
    assert got.evidence[-1] == (
        "audited on NVIDIA H200, 16 cores: scaled_mm_sm120_fp8.cu.o sm_120a: QMMA×1024"
    )


def test_an_audit_without_the_arch_leaves_the_source_scan() -> None:
    a = fp8gemm.Answer("8.0", True, "yes", (), ("csrc/x/c3x/scaled_mm_sm120_fp8.cu",))
    assert fp8gemm.confirm(a, _objects(), "m").depth == fp8gemm.SOURCE_SCAN


def test_an_audit_that_contradicts_the_scan_is_an_error() -> None:
    no = fp8gemm.Answer("12.0", False, "no: ...", (), ("csrc/x/c3x/scaled_mm_sm120_fp8.cu",))
    with pytest.raises(MatrixError, match="contradicts the source scan"):
        fp8gemm.confirm(no, _objects(), "m")
    empty = [{"object": "scaled_mm_sm100_fp8.cu.o", "sass": ["12.0a"], "mma": {"12.0a": {}}}]
    no100 = fp8gemm.Answer("12.0", False, "no", (), ("c3x/scaled_mm_sm100_fp8.cu",))
    got = fp8gemm.confirm(no100, empty, "m")
    assert got.depth == fp8gemm.AUDITED and "no MMA instruction" in got.evidence[-1]
