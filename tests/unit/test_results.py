from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import Finding, StageResult

CELL = Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
MACH = {"arch": "x86_64", "cpus": 2, "mem_gib": 23, "gpu": None, "os": "Debian", "python": "3.11"}


def st(stage: str, status: str, *findings: Finding) -> StageResult:
    return StageResult(stage, status, 0.1, f"{stage} {status}", findings)


def test_envelope_contract(tmp_path: Path) -> None:
    """The JSON contract the report (and any consumer) relies on."""
    f = Finding("torch-pin", "warn", "pins 2.6.0", "use it", ("CMakeLists.txt:49",), "url")
    path = results.write(tmp_path, CELL, [st("source", "pass"), st("preflight", "warn", f)], MACH)
    assert path.name == f"{CELL.id}.json"
    d = results.read(path)
    assert set(d) == {"schema", "version", "written", "cell", "machine", "stages", "verdict"}
    assert d["schema"] == "vllm-matrix/cell-result" and d["version"] == 1
    assert d["cell"]["id"] == CELL.id and d["cell"]["arch"] == ["9.0"]
    s = d["stages"][1]
    assert set(s) == {"stage", "status", "seconds", "summary", "findings", "details", "log"}
    assert set(s["findings"][0]) == {"rule", "level", "message", "fix", "evidence", "source"}
    assert d["verdict"] == {
        "verdict": "PREFLIGHT-OK",
        "depth": "preflight",
        "cause": "pins 2.6.0",
        "fix": "use it",
        "evidence": ["CMakeLists.txt:49"],
        "rests_on": "",
        "label": "PREFLIGHT-OK",
    }
    assert StageResult.from_json(s) == st("preflight", "warn", f)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temp file"


def test_read_rejects_other_versions(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "vllm-matrix/cell-result", "version": 99}))
    with pytest.raises(results.ResultFormatError, match="rerun"):
        results.read(p)


def test_verdicts() -> None:
    fail = Finding("nvcc-arch", "fail", "nvcc 12.4 cannot target sm_120", "CUDA ≥ 12.8", ("x",))
    skip = Finding("toolkit-obtainable", "skip", "no CUDA 12.8 here", "install it")
    v = results.verdict_of([st("source", "pass"), st("preflight", "predicted-fail", fail, skip)])
    assert (v.verdict, v.depth, v.cause, v.fix) == (
        "PREDICTED-FAIL",
        "preflight",
        "nvcc 12.4 cannot target sm_120",
        "CUDA ≥ 12.8",
    )
    v = results.verdict_of([st("source", "pass"), st("preflight", "skip", skip)])
    assert v.verdict == "SKIPPED" and v.cause == "no CUDA 12.8 here"
    v = results.verdict_of([st("source", "fail", Finding("source", "fail", "no sdist", "use git"))])
    assert v.verdict == "FAIL" and v.depth == "source"
    assert results.verdict_of([]).verdict == "UNKNOWN"
    v = results.verdict_of([st("source", "pass"), st("probe", "pass")])
    assert v.verdict == "PASS"
    v = results.verdict_of([st("source", "pass"), st("facts", "interrupted")])
    assert v.verdict == "UNKNOWN" and v.depth == "facts"


def test_forced_probe_failure_outranks_the_prediction() -> None:
    pred = Finding("api-Float8_e8m0fnu", "fail", "uses Float8_e8m0fnu", "torch >= 2.7")
    comp = Finding(
        "signature:float8",
        "fail",
        "gptq_marlin.cu(911): error: ...",
        "torch >= 2.7",
        ("probe/logs/gptq_marlin.log:12",),
    )
    v = results.verdict_of([st("preflight", "predicted-fail", pred), st("probe", "fail", comp)])
    assert (v.verdict, v.depth) == ("FAIL", "probe") and "gptq_marlin.cu(911)" in v.cause
    v = results.verdict_of([st("preflight", "predicted-fail", pred), st("probe", "pass")])
    assert v.verdict == "PREDICTED-FAIL" and v.depth == "probe"


def test_a_build_that_could_not_run_keeps_the_probes_pass() -> None:
    miss = Finding("build", "skip", "missing sources: cutlass v3.9.0", "inv prefetch --vllm 0.8.5")
    probed = [st("source", "pass"), st("probe", "pass")]
    v = results.verdict_of([*probed, st("build", "skip", miss)])
    assert (v.verdict, v.depth) == ("PASS", "probe")
    assert v.cause == "build skipped: missing sources: cutlass v3.9.0"
    assert v.fix == "inv prefetch --vllm 0.8.5"
    v = results.verdict_of([*probed, st("build", "interrupted")])
    assert (v.verdict, v.depth) == ("PASS", "probe") and v.cause.startswith("build interrupted")
    # ... but a build that ran and failed is the verdict, and nothing compiled is no PASS.
    bad = Finding("sig", "fail", "ptxas died", "less jobs")
    assert results.verdict_of([*probed, st("build", "fail", bad)]).verdict == "FAIL"
    v = results.verdict_of([st("source", "pass"), st("env", "pass"), st("probe", "skip", miss)])
    assert v.verdict == "SKIPPED"
    v = results.verdict_of([*probed, st("build", "pass"), st("audit", "fail", bad)])
    assert (v.verdict, v.depth) == ("FAIL", "audit")


def _unit(path: str, status: str, note: str = "") -> dict[str, str]:
    return {"path": path, "status": status, "note": note}


def test_a_probe_that_compiled_part_of_its_selection_says_so() -> None:
    """vLLM 0.10.0 x torch 2.6.0 x sm_90 (measured here): 14 units selected, the 7 that
    include CUTLASS not compiled (PyPI's nvidia-cutlass has no 4.0.0)."""
    cut = "not probed: needs cutlass v4.0.0 (VLLM_CUTLASS_SRC_DIR): PyPI nvidia-cutlass has none"
    units = [_unit(f"a{i}.cu", "pass") for i in range(7)] + [
        _unit(f"c{i}.cu", "not-probed", cut) for i in range(6)
    ]
    units.append(_unit("g.cu", "not-probed", "not probed: needs a generated file (x.h)"))
    probe = StageResult("probe", "pass", 1.0, "7 units", (), {"units": units})
    v = results.verdict_of([st("source", "pass"), st("preflight", "pass"), probe])
    assert v.verdict == "PASS" and v.depth == "probe"
    assert v.rests_on == "7 of 14 units; 6 need CUTLASS v4.0.0; 1 needs a generated file"
    assert v.label == "PASS (7 of 14 units; 6 need CUTLASS v4.0.0; 1 needs a generated file)"
    whole = StageResult("probe", "pass", 1.0, "7 units", (), {"units": units[:7]})
    assert results.verdict_of([st("preflight", "pass"), whole]).label == "PASS"


def test_a_cause_found_in_many_units_is_said_once() -> None:
    """vLLM 0.8.5 × nvcc 12.4 × sm_120: four probed units fail on the same signature; the
    verdict's cause says it once and counts the rest, the evidence names every unit."""
    msg = "nvcc does not know this Blackwell-class arch (line {}: compute_120)"
    same = [
        Finding("signature:nvcc_too_old", "fail", msg.format(n), "CUDA >= 12.8", (f"u{n}.log",))
        for n in (54, 54, 56, 56)
    ]
    found = (*same, Finding("signature:other", "fail", "something else", None, ("x.log",)))
    v = results.verdict_of([StageResult("probe", results.FAIL, 1.0, "4 failed", found)])
    assert v.cause == msg.format(54) + " (and 3 more unit(s) alike); something else"
    assert v.evidence == ("u54.log", "u54.log", "u56.log", "u56.log", "x.log")
