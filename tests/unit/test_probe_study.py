"""studies/probe_study.py (benchmarks/studies/probe_study.py's logic): the comparison of the
probe's selection with the full sweep (cause classes per failing unit, caught / missed / false
PASS, the cost of each mode), on fixture probe stages shaped as the result files'
``stages[*]``."""

from __future__ import annotations

from typing import Any

import pytest

from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.studies import probe_study as study

FLOAT8 = "signature:torch_lacks_float8_e8m0fnu"


def unit(
    path: str,
    status: str = "pass",
    *,
    cache: str = "miss",
    fe: float = 10.0,
    cg: float = 0.0,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "path": path,
        "status": status,
        "depth": "codegen" if cg else ("front-end" if status != "not-probed" else "none"),
        "front_end_cache": cache,
        "front_end_s": fe,
        "codegen_s": cg,
        "first_error": error,
        "log": f"results/logs/c/probe/logs/{path.replace('/', '__')}.log",
        "why": f"API scan: Float8_e8m0fnu (torch >= 2.7.0) at {path}:9" if error else "bindings: x",
    }


def missing(name: str, path: str) -> str:
    return f'results/logs/c/tree/{path}(9): error: namespace "at" has no member "{name}"'


def probe(units: list[dict[str, Any]], rules: dict[str, str], wall: float) -> dict[str, Any]:
    """A probe stage: a classify finding per failed unit (``rules``: path -> rule)."""
    findings = [
        {
            "rule": rules[entry["path"]],
            "level": "fail",
            "message": f'cause (line 9: "{entry["first_error"]}")',
            "evidence": [entry["log"] + ":9", "results/logs/c/tree/" + entry["path"]],
        }
        for entry in units
        if entry["status"] == "fail"
    ]
    findings.append({"rule": "prediction-check", "level": "info", "message": "", "evidence": []})
    failed = any(entry["status"] == "fail" for entry in units)
    return {
        "stage": "probe",
        "status": "fail" if failed else "pass",
        "seconds": wall,
        "findings": findings,
        "details": {"wall_seconds": wall, "cpu_seconds": 2 * wall, "units": units},
    }


def test_causes_are_the_signature_and_the_missing_name() -> None:
    probed = probe(
        [
            unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu")),
            unit("b.cu", "fail", error="b.cu(3): error: expected a ';'"),
            unit("c.cu"),
        ],
        {"a.cu": FLOAT8, "b.cu": "unknown"},
        10,
    )
    assert study.unit_causes(probed) == {
        "a.cu": "torch_lacks_float8_e8m0fnu (Float8_e8m0fnu)",
        "b.cu": "unknown",
    }


def test_caught_when_every_cause_of_the_sweep_is_in_the_selection() -> None:
    fail = {"a.cu": FLOAT8, "b.cu": FLOAT8}
    sel = probe(
        [unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu")), unit("x.cu", cache="hit")],
        fail,
        50,
    )
    sweep = probe(
        [
            unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu")),
            unit("b.cu", "fail", error=missing("Float8_e8m0fnu", "b.cu")),
            unit("x.cu", cache="hit", fe=1.0),
            unit("y.cu"),
            unit("gen.cu", "not-probed", fe=0.0),
        ],
        fail,
        200,
    )
    compared = study.compare(sel, sweep)
    assert compared["outcome"] == "caught"
    assert compared["causes_missed"] == []
    # b.cu was never compiled by the selection, but a.cu shows its cause
    assert compared["failing_not_selected"] == [
        {
            "path": "b.cu",
            "cause": "torch_lacks_float8_e8m0fnu (Float8_e8m0fnu)",
            "cause_covered": True,
        }
    ]
    assert compared["all_not_probed"] == ["gen.cu"]
    assert compared["selected_failing_why"] == {"a.cu": "API scan"}
    sel_cost, sweep_cost, ratio = (
        compared["cost"]["selected"],
        compared["cost"]["all"],
        compared["cost"]["ratio"],
    )
    assert (sel_cost["units_compiled"], sweep_cost["units_compiled"]) == (2, 4)
    assert (sweep_cost["cache_hits"], sweep_cost["cache_misses"], sweep_cost["not_probed"]) == (
        1,
        3,
        1,
    )
    assert sweep_cost["hits_beyond_selection"] == 0  # x.cu's hit is the selection's own unit
    assert sweep_cost["front_end_s"] == 31.0
    assert ratio["wall_s"] == 0.25 and ratio["units_compiled"] == 0.5 and ratio["cpu_s"] == 0.25


def test_a_cause_only_the_sweep_found_is_missed() -> None:
    sel = probe(
        [unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu"))], {"a.cu": FLOAT8}, 10
    )
    sweep = probe(
        [
            unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu")),
            unit("z.cu", "fail", error=missing("Float4_e2m1fn_x2", "z.cu")),
        ],
        {"a.cu": FLOAT8, "z.cu": "unknown"},
        20,
    )
    sweep["details"]["units"].append(unit("w.cu", cache="hit"))  # an earlier cell's
    compared = study.compare(sel, sweep)
    assert compared["cost"]["all"]["hits_beyond_selection"] == 1
    assert compared["outcome"] == "MISSED"
    assert compared["causes_missed"] == ["unknown (Float4_e2m1fn_x2)"]
    assert compared["failing_not_selected"][0]["cause_covered"] is False


def test_a_selection_that_passes_where_the_sweep_fails_is_a_false_pass() -> None:
    sel = probe([unit("x.cu")], {}, 10)
    sweep = probe(
        [unit("x.cu"), unit("z.cu", "fail", error=missing("Float8_e8m0fnu", "z.cu"))],
        {"z.cu": FLOAT8},
        20,
    )
    assert study.compare(sel, sweep)["outcome"] == "false PASS"


def test_both_passing_and_disagreeing_units() -> None:
    sel = probe([unit("x.cu", "timeout"), unit("y.cu")], {}, 10)
    sweep = probe([unit("x.cu"), unit("y.cu")], {}, 20)
    compared = study.compare(sel, sweep)
    assert compared["outcome"] == "both pass"
    assert compared["disagree"] == [{"path": "x.cu", "selected": "timeout", "all": "pass"}]


def test_the_report_says_what_did_not_finish_and_the_cost_span() -> None:
    fail = {"a.cu": FLOAT8}
    sel = probe([unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu"))], fail, 50)
    sweep = probe(
        [unit("a.cu", "fail", error=missing("Float8_e8m0fnu", "a.cu")), unit("y.cu")], fail, 200
    )
    row = {
        "id": "c",
        "vllm": "0.10.1",
        "torch": "2.6.0",
        "preflight": "predicted-fail",
        "machine": "x86_64 2 cores",
        "verdict": {"selected": "FAIL", "all": "FAIL"},
        **study.compare(sel, sweep),
    }
    markdown = study.render({"cells": [row], "cold": [], "not_finished": ["vllm0.9.2-x"]})
    assert "Not finished (no result for both modes): `vllm0.9.2-x`" in markdown
    assert "1 caught; the selection cost 25 % to 25 % of the sweep's wall time" in markdown
    assert "Cold runs" not in markdown
    assert "**caught**" in markdown and "`a.cu` (API scan)" in markdown


def test_kept_results_name_no_git_dir_of_this_machine() -> None:
    origin = "prefetched: git /srv/mirrors/NVIDIA+cutlass/repo@v4.0.0 (commit b995f933179c)"
    result = {
        "stages": [{"stage": "probe", "details": {"externals": {"cutlass": {"origin": origin}}}}]
    }
    out = study.portable(result)["stages"][0]["details"]["externals"]["cutlass"]["origin"]
    assert out == "prefetched: git <git dir>@v4.0.0 (commit b995f933179c)"
    with pytest.raises(MatrixError, match="a path of this machine"):
        study.portable({"log": "/opt/elsewhere/probe.log"})
