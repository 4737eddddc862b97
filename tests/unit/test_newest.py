from __future__ import annotations

from typing import Any

import pytest

from vllm_matrix.commands import newest
from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.infra.results import PASS, PREDICTED_FAIL, SKIP, WARN, StageResult
from vllm_matrix.knowledge import toolchains
from vllm_matrix.stages import preflight

K = toolchains.load()
HOST = preflight.Host(gcc_major=12, system_cuda={}, conda_prefix=None)
PINS = {
    "0.8.5": "2.6.0",
    "0.8.5.post1": "2.6.0",
    "0.9.0": "2.7.0",
    "0.10.0": "2.7.1",
    "0.10.1": "2.7.1",
    "0.11.0rc1": "2.8.0",
    "0.11.0": "2.8.0",
}


def stepper(verdicts: dict[str, str], seen: list[Cell]) -> Any:
    def step(c: Cell) -> newest.Step:
        seen.append(c)
        v = verdicts[c.vllm]
        fails = ("uses Float8_e8m0fnu",) if v == PREDICTED_FAIL else ()
        return newest.Step(c.vllm, v, fails, ("csrc/x.cu:1",) if fails else ())

    return step


def test_walk_goes_newest_down_and_stops_at_the_first_go() -> None:
    seen: list[Cell] = []
    verdicts = {"0.11.0": PREDICTED_FAIL, "0.10.1": PREDICTED_FAIL, "0.10.0": WARN}
    ans = newest.walk(
        "2.6.0",
        None,
        ("9.0",),
        "3.12",
        know=K,
        host=HOST,
        pinned=PINS,
        step=stepper(verdicts, seen),
    )
    assert [c.vllm for c in seen] == ["0.11.0", "0.10.1", "0.10.0"]  # no rc, newest first
    assert (ans.newest, ans.next, ans.depth) == ("0.10.0", "0.10.1", "preflight")
    assert ans.cuda == "12.4" and ans.provider == "debian"  # from torch 2.6.0's facts
    assert seen[0].torch == "2.6.0" and seen[0].arch == ("9.0",)
    assert ans.pinned_to_this_torch == "0.8.5.post1"
    j = ans.to_json()
    assert {"newest", "next", "depth", "evidence"} <= set(j)
    assert [s["vllm"] for s in j["evidence"]["walk"]] == ["0.11.0", "0.10.1", "0.10.0"]


def test_skipped_toolkit_still_counts_as_a_preflight_go() -> None:
    seen: list[Cell] = []
    ans = newest.walk(
        "2.7.1+cu128",
        "12.8",
        ("12.0",),
        know=K,
        host=HOST,
        pinned=PINS,
        step=stepper({"0.11.0": PREDICTED_FAIL, "0.10.1": SKIP}, seen),
    )
    assert ans.newest == "0.10.1" and ans.next == "0.11.0" and ans.provider == "system"
    assert seen[0].id == "vllm0.11.0-torch2.7.1cu128-cu12.8-py3.12-sm120"


def test_nothing_builds() -> None:
    ans = newest.walk(
        "2.6.0",
        "12.4",
        know=K,
        host=HOST,
        pinned=PINS,
        step=stepper(dict.fromkeys(PINS, PREDICTED_FAIL), []),
    )
    assert ans.newest is None and ans.next is None
    assert "predicted to fail" in newest.explain(ans, None).rests_on[0]


def test_unknown_torch_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="pass --cuda"):
        newest.walk("2.7.1+cu130", know=K, host=HOST, pinned=PINS, step=stepper({}, []))


def test_probe_confirms_the_boundary_and_explain_says_what_it_rests_on() -> None:
    ans = newest.walk(
        "2.6.0",
        "12.4",
        know=K,
        host=HOST,
        pinned=PINS,
        step=stepper({"0.11.0": PREDICTED_FAIL, "0.10.1": PREDICTED_FAIL, "0.10.0": WARN}, []),
    )
    calls: list[tuple[str, bool]] = []

    def run_cell(c: Cell, force: bool) -> list[StageResult]:
        calls.append((c.vllm, force))
        if c.vllm == "0.10.0":
            return [
                StageResult("preflight", WARN, 0, "go"),
                StageResult("probe", PASS, 200, "7 units, front-end, all passed"),
            ]
        return [
            StageResult("preflight", PREDICTED_FAIL, 0, "x"),
            StageResult("probe", results.FAIL, 200, "Float8_e8m0fnu is not a member"),
        ]

    probed = newest.probe_boundary(ans, run_cell)
    assert calls == [("0.10.0", False), ("0.10.1", True)]  # the next one past its prediction
    assert probed.depth == "probe"
    assert probed.probes["0.10.0"]["verdict"] == "PASS"
    assert probed.probes["0.10.1"]["verdict"] == "FAIL"
    out = newest.explain(probed, "torch==2.7.1")
    text = " ".join(out.rests_on)
    assert "a compile is not a run" in text
    assert "(7 units, front-end, all passed)" in text
    assert "requires torch==2.7.1" in text and "not 2.6.0" in text
    assert "0.8.5.post1" in text
    own = newest.explain(probed, "torch==2.6.0")
    assert "its own pin" in " ".join(own.rests_on)
    assert "0.10.0" in newest.render(out)


def test_blackwell_release_table_renders_depth_and_basis() -> None:
    from vllm_matrix.report import readme

    row = {
        "vllm": "0.10.1",
        "arch": "12.0",
        "cell": "vllm0.10.1-torch2.7.1cu128-cu12.8-py3.12-sm120",
        "torch": "2.7.1+cu128",
        "cuda": "12.8",
        "provider": "system",
        "preflight": "skip",
        "off_pin": False,
        "why": ["no system CUDA 12.8"],
        "evidence": [],
        "modelopt_fp8": "yes (sm89+)",
        "modelopt_evidence": "modelopt.py:84",
        "torch_facts": "documented",
        "kernels": ["SCALED_MM_ARCHS built with nvcc 12.8"],
    }
    doc = {"cells": [], "blackwell": {"arch": "12.0", "releases": [row], "newest": None}}
    text = readme.blackwell_releases(doc)
    assert "torch 2.7.1+cu128 × CUDA 12.8 (system) — its own pin" in text
    assert "| documented |" in text and "SKIPPED (preflight)" in text
    assert "yes (sm89+) (modelopt.py:84)" in text
    cell = {"id": row["cell"], "verdict": "PASS", "depth": "probe"}
    assert "PASS (probe, matrix cell)" in readme.blackwell_releases(doc | {"cells": [cell]})
