"""Issue 23's Blackwell user, on real releases: torch 2.6.0+cu124, CUDA 12.4, an RTX 5090.

- a cell whose toolkit is not on this machine gets every rule's verdict and "not compiled
  here", never a bare SKIPPED;
- the same question asked through `release`, `newest`, the Blackwell table, `doctor` and
  the map gives the same advice (pipeline/advice.py), with concrete versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import index_reachable, skip_or_fail

from vllm_matrix import cli
from vllm_matrix.commands import doctor, newest
from vllm_matrix.infra.config import Cell
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import advice, context, mapping
from vllm_matrix.stages import preflight

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _index() -> None:
    why = index_reachable()
    if why:
        skip_or_fail(why)


def _result(tmp: Path, cell_id: str) -> dict[str, object]:
    d: dict[str, object] = json.loads((tmp / "results" / f"{cell_id}.json").read_text())
    return d


def test_a_cell_this_machine_cannot_compile_still_gets_every_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["release", "0.8.5", "--torch", "2.7.0+cu128", "--cuda", "12.8", "--arch", "12.0"]
    rc = cli.main([*argv, "--depth", "probe", "--matrix", str(tmp_path / "matrix.toml")])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("PREFLIGHT-OK") and "SKIPPED" not in out
    assert "not compiled here: " in out
    for rule in ("torch-pin", "nvcc-arch", "torch-arch", "kernel-gate"):
        assert f" {rule} " in out
    # the gate reads as CMake means it: 'VERSION_GREATER 12.8' is met by nvcc 12.8.x
    assert "only with nvcc ≥ 12.8 (CMake `VERSION_GREATER 12.8`" in out
    assert "built with nvcc 12.8" in out and "NOT built" not in out


def test_the_same_question_gets_the_same_advice_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # release: the user's own cell, its stored advice is compat.md's fix
    m = str(tmp_path / "matrix.toml")
    argv = ["release", "0.8.5", "--torch", "2.6.0", "--cuda", "12.4", "--gpu", "RTX 5090"]
    assert cli.main([*argv, "--depth", "preflight", "--matrix", m]) == 1  # vLLM fails
    capsys.readouterr()
    res = _result(tmp_path, "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm120")
    verdict = res["verdict"]
    assert isinstance(verdict, dict) and verdict["verdict"] == "PREDICTED-FAIL"
    stages = res["stages"]
    assert isinstance(stages, list)
    pre = next(s for s in stages if s["stage"] == "preflight")
    stored = pre["details"]["advice"]
    assert verdict["fix"] == stored["text"]
    first = stored["options"][0]
    assert (first["vllm"], first["torch"], first["cuda"]) == ("0.8.5", "2.7.0+cu128", "12.8")

    # the Blackwell table: the option that keeps vLLM 0.8.5
    know, pinned = toolchains.load(), pins.load()
    adv = advice.Adviser(know=know, pinned=pinned)
    c = newest.cheapest("0.8.5", "12.0", know=know, pinned=pinned, adviser=adv)
    assert c.cell is not None and (c.cell.torch, c.cell.cuda) == ("2.7.0+cu128", "12.8")

    # the map's tooltip for the same cell
    cell = Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", ("12.0",))
    rf = mapping.release_facts("0.8.5", know)
    mc = mapping.preflight_cell(cell, rf, know, preflight.Host(None, {}, None), pinned, adv)
    assert mc.fix == stored["text"]

    # newest (no vLLM given): the same options less the vLLM-keeping one
    rc = cli.main(["newest", "--torch", "2.6.0", "--cuda", "12.4", "--gpu", "RTX 5090", "--json"])
    ans = json.loads(capsys.readouterr().out)
    assert rc == 1 and ans["newest"] is None
    free = [o for o in stored["options"] if o["vllm"] != "0.8.5"]
    got = [(o["vllm"], o["torch"], o["cuda"]) for o in ans["advice"]["options"]]
    assert got[: len(free)] == [(o["vllm"], o["torch"], o["cuda"]) for o in free]

    # doctor: the fix of the arch problems is newest's first option
    monkeypatch.setattr(advice, "adviser_for", lambda *a, **k: adv)
    r = doctor.Report("t")
    fix = doctor._advise(r, "2.6.0+cu124", "12.4", ("12.0",), "3.12")
    o = ans["advice"]["options"][0]
    assert fix.startswith(f"vLLM {o['vllm']} × torch {o['torch']} × CUDA {o['cuda']}")


def test_modelopt_fp8_is_one_answer_in_release_and_the_blackwell_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Blackwell table said "yes (sm89+)" for vLLM 0.8.5 on sm_120 while compat.md said
    "no" (its FP8 GEMM dispatches cc ≥ 100 to SM100 tcgen05 kernels): both now come from
    modelopt.fp8_column."""
    m = str(tmp_path / "matrix.toml")
    argv = ["release", "0.8.5", "--torch", "2.7.0+cu128", "--cuda", "12.8", "--arch", "12.0"]
    assert cli.main([*argv, "--depth", "preflight", "--matrix", m]) == 0
    capsys.readouterr()
    res = _result(tmp_path, "vllm0.8.5-torch2.7.0cu128-cu12.8-py3.12-sm120")
    stages = res["stages"]
    assert isinstance(stages, list)
    column = next(s for s in stages if s["stage"] == "preflight")["details"]["modelopt_fp8"]
    assert column.startswith("no: cc ≥ 100 goes to cutlass_scaled_mm_sm100")
    c = newest.cheapest("0.8.5", "12.0", ws=context.Workspace(tmp_path))
    assert c.cell is not None and c.cell.id == "vllm0.8.5-torch2.7.0cu128-cu12.8-py3.12-sm120"
    assert c.modelopt_fp8 == column
