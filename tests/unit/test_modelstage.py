"""modelstage: the model stage's judgement on recorded outputs, and its no-GPU and no-vLLM
paths (all on CPU, no torch). The recorded outputs (tests/unit/model/) are the plain-torch
forward of the tiny checkpoint, made by test_tinymodel.py, in the worker's format."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_or_fail

from vllm_matrix.infra.results import ERROR, FAIL, PASS, SKIP
from vllm_matrix.stages.model import modelcheck, modelstage

FIXTURES = Path(__file__).parent / "model"


def doc(name: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return d


def test_recorded_fp8_run_passes_the_tolerance() -> None:
    res = modelstage.judge(doc("bf16"), doc("fp8"), modelcheck.load())
    assert res.stage == "model" and res.status == PASS, res.findings
    c = res.details["fp8_vs_bf16"]
    assert c["tokens"] == 256 and c["prompts"] == 8
    assert c["forced_top1_agreement"] >= 0.85
    assert res.details["tolerance"]["fp8_vs_bf16"]["min_top1_agreement"] == 0.8
    assert "top-1 0.9" in res.summary
    # The result is a StageResult like every other stage's (JSON round trip).
    assert type(res).from_json(json.loads(json.dumps(res.to_json()))) == res


def test_a_loader_defect_fails() -> None:
    """weight_scale read as 1: what the fp8-vs-bf16 bound exists to catch."""
    res = modelstage.judge(doc("bf16"), doc("fp8-weight-scale-dropped"), modelcheck.load())
    assert res.status == FAIL
    assert {f.rule for f in res.findings} == {"fp8-vs-bf16"}
    assert res.details["fp8_vs_bf16"]["forced_top1_agreement"] < 0.2


def test_vllm_against_the_reference() -> None:
    """The reference check: vLLM's bf16 run scored by the plain-torch forward. Here the
    'vLLM' run is the recorded reference itself scored by the fp8 forward: 0.91 agreement
    is below the 0.95 the reference check demands, so it fails as it should."""
    ref = {"bf16": doc("fp8")}
    res = modelstage.judge(doc("bf16"), doc("fp8"), modelcheck.load(), reference=ref)
    assert res.status == FAIL
    assert {f.rule for f in res.findings} == {"vllm-vs-reference"}
    assert res.details["bf16_vllm_vs_reference"]["forced_top1_agreement"] < 0.95


def test_not_a_run_document() -> None:
    with pytest.raises(ValueError, match="model-run"):
        modelstage.judge({"outputs": []}, doc("fp8"), modelcheck.load())


def test_no_gpu_here_means_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelstage.gpuinfo, "names", lambda: ())
    res = modelstage.run(tmp_path / "bf16", tmp_path / "fp8", tmp_path / "work")
    assert res.status == SKIP and res.summary == "not run: no GPU"
    assert res.findings[0].level == "skip"


def test_no_vllm_is_an_error_not_a_fact_about_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU but no importable vLLM: the real worker process exits with its code, and the
    stage is ERROR (the machine's setup), never FAIL."""
    try:
        import vllm  # noqa: F401

        skip_or_fail("vLLM is importable here", machine=True)
    except ImportError:
        pass
    monkeypatch.setattr(modelstage, "gpu_name", lambda: "NVIDIA H200")
    res = modelstage.run(tmp_path, tmp_path, tmp_path / "work", python=sys.executable)
    assert res.status == ERROR, res
    assert "the worker cannot start" in res.summary
    # The fix names the first runtime package missing (torch is imported first; where the
    # [model] extra put torch here, vllm itself).
    first = "torch" if importlib.util.find_spec("torch") is None else "vllm"
    assert f"install vLLM's runtime package '{first}'" in res.findings[0].fix
    assert "fix" not in res.findings[0].message and res.findings[0].fix
