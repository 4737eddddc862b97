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
from typing import assert_type

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
    assert len(typos) == 8 and lines == typos, out + err


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
