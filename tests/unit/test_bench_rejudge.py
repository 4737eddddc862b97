"""studies/rejudge.py (benchmarks/studies/rejudge.py's logic): a device run's recorded data
judged again with the current rules."""

from __future__ import annotations

import json
from pathlib import Path

from vllm_matrix.infra.results import FAIL, PASS, Finding, StageResult
from vllm_matrix.studies.rejudge import rejudge

DEVICE = Path(__file__).with_name("device")


def _run3() -> dict:
    """The shape of the third device run's result: a partial build, then an audit that
    failed on the old per-object rule (its census is the run's own)."""
    objs = json.loads((DEVICE / "fp8-gemm-objects.vllm0.20.0-sm90a_sm120a.json").read_text())
    old = Finding(
        "sm90a", "fail", "scaled_mm_entry.cu.o: its sm_90a SASS has no wgmma", "build for 9.0a"
    )
    stages = [
        StageResult(
            "build",
            PASS,
            1.0,
            "partial",
            (),
            {"partial": {"targets": ["_C", "_C_stable_libtorch"]}},
        ),
        StageResult(
            "audit",
            FAIL,
            1.0,
            "partial: targets _C, _C_stable_libtorch (not a wheel)",
            (old, Finding("coverage", "info", "12.0a: sass")),
            {"targets": ["9.0a", "12.0a"], "fp8_gemm_objects": objs["fp8_gemm_objects"]},
        ),
    ]
    return {"stages": [stage.to_json() for stage in stages]}


def test_rejudge_clears_the_wrong_rule_and_adds_the_gpu_stage() -> None:
    worker = json.loads((DEVICE / "gpu-worker.vllm0.20.0-h200.json").read_text())
    out = rejudge(_run3(), worker)
    by_stage = {stage["stage"]: stage for stage in out["stages"]}
    assert by_stage["audit"]["status"] == PASS
    assert [finding["rule"] for finding in by_stage["audit"]["findings"]] == [
        "coverage"
    ]  # others kept
    assert by_stage["audit"]["details"]["rejudged"]["recorded_sm90a_findings"]
    assert "re-judged" in by_stage["audit"]["summary"] and "re-judged" in by_stage["gpu"]["summary"]
    assert by_stage["gpu"]["status"] == PASS
    assert out["verdict"]["verdict"] == "PASS"
    assert out["verdict"]["depth"] == "gpu (partial: targets _C, _C_stable_libtorch)"


def test_rejudge_still_fails_a_build_without_wgmma() -> None:
    doc = _run3()
    audit = doc["stages"][1]
    audit["details"]["fp8_gemm_objects"] = [
        obj
        for obj in audit["details"]["fp8_gemm_objects"]
        if obj["object"] == "scaled_mm_entry.cu.o"
    ]
    out = rejudge(doc, None)
    assert out["stages"][1]["status"] == FAIL
    assert out["verdict"]["verdict"] == "FAIL" and "wgmma" in out["verdict"]["cause"]
    assert [stage["stage"] for stage in out["stages"]] == [
        "build",
        "audit",
    ]  # no worker: no gpu stage
