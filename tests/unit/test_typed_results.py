"""Verdicts, statuses, levels and the result envelope are typed: mypy --strict (the check
nox -s tests runs on src) rejects a misspelt member, level or key. Each line marked
``# typo`` below must be an error, and nothing else may be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import need_module

from vllm_matrix.infra import results

mypy_api = need_module("mypy.api", "the dev extra: the test runs mypy --strict")

SRC = Path(__file__).resolve().parents[2] / "src"

CHECKED = """
from typing import Any, assert_type, cast

from vllm_matrix.infra import results
from vllm_matrix.infra.results import CellVerdict, Finding, StageResult, Status, Verdict


def typed(doc: results.Envelope, r: StageResult, v: CellVerdict) -> None:
    assert_type(r.status, Status)
    assert_type(v.verdict, Verdict)
    assert_type(doc["verdict"]["verdict"], Verdict)
    assert_type(doc["stages"][0]["status"], Status)
    assert_type(doc["stages"][0]["findings"][0]["level"], results.Level)
    pre = results.preflight_details(doc["stages"])
    if pre is not None:
        assert_type(pre["modelopt_fp8"], str)
    est = results.estimate_of(doc["stages"][0])
    if est is not None and "wheel" in est:
        assert_type(est["wheel"]["line"], str)
    for unit in results.probe_details(doc["stages"][0]["details"]).get("units", []):
        assert_type(unit.get("front_end_s"), float | None)
    built = cast(results.BuildDetails, r.details)
    if "partial" in built:
        assert_type(built["partial"]["extensions"], list[str])
    assert_type(cast(results.EnvDetails, r.details)["fixups"]["set"][0]["name"], str)
    assert_type(cast(results.ToolkitDetails, r.details)["max_gcc"], int | None)
    assert_type(cast(results.AuditDetails, r.details).get("targets"), list[str] | None)
    assert_type(cast(results.SmokeDetails, r.details).get("not_run"), list[str] | None)
    assert_type(cast(results.PatchesDetails, r.details)["applied"][0]["status"], str)
    assert_type(cast(results.GpuDetails, r.details).get("gpus"), dict[str, Any] | None)
    assert_type(cast(results.ModelDetails, r.details).get("gpu_name"), str | None)


def typos(doc: results.Envelope, r: StageResult, v: CellVerdict) -> None:
    print(r.status == Status.PAS)  # typo
    print(v.verdict == Verdict.PREFLIGHT_OKAY)  # typo
    print(doc["stages"][0]["stauts"])  # typo
    print(doc["verdcit"])  # typo
    Finding("rule", "wran", "message")  # typo
    StageResult("probe", "pass", 0.0, "a bare string is no status")  # typo
    pre = results.preflight_details(doc["stages"])
    if pre is not None:
        print(pre["modelopt_fp9"])  # typo
    print(results.probe_details(doc["stages"][0]["details"])["unit"])  # typo
    print(cast(results.BuildDetails, r.details)["partial"]["extension"])  # typo
    print(cast(results.BuildDetails, r.details)["installable"]["paht"])  # typo
    print(cast(results.EnvDetails, r.details)["fixups"]["sets"])  # typo
    print(cast(results.ToolkitDetails, r.details)["full_verison"])  # typo
    print(cast(results.PatchesDetails, r.details)["aplied"])  # typo
    print(cast(results.AuditDetails, r.details)["fp8_gemm_object"])  # typo
    print(cast(results.SmokeDetails, r.details)["not_ran"])  # typo
    print(cast(results.GpuDetails, r.details)["gpu"])  # typo
    print(cast(results.ModelDetails, r.details)["throughputs"])  # typo
"""


def test_mypy_rejects_each_typo_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checked.py"
    path.write_text(CHECKED)
    monkeypatch.setenv("MYPYPATH", str(SRC))
    out, err, _ = mypy_api.run(
        [
            "--strict",
            "--config-file=",  # not the project's (its `files` would check all of src)
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports=silent",
            str(path),
        ]
    )
    errors = [x for x in out.splitlines() if ": error:" in x]
    lines = {int(x.split(":")[1]) for x in errors}
    typos = {n for n, x in enumerate(CHECKED.splitlines(), 1) if x.endswith("# typo")}
    assert len(typos) == 17 and lines == typos, out + err


def test_members_are_their_values_in_json() -> None:
    assert json.dumps([results.Status.PREDICTED_FAIL, results.Verdict.PREFLIGHT_OK]) == (
        '["predicted-fail", "PREFLIGHT-OK"]'
    )
    assert f"{results.Verdict.PASS:6}|{results.Status.PASS}" == "PASS  |pass"
    assert results.STATUSES == (
        "pass",
        "fail",
        "warn",
        "skip",
        "predicted-fail",
        "interrupted",
        "error",
    )
