"""The one advice (pipeline/advice.py), and that every command that advises gives it.

Releases are fixture facts (pins, arch lists, API uses), so nothing depends on what the
index publishes; the torch and nvcc facts are the shipped knowledge."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_preflight import facts

from vllm_matrix.commands import doctor, newest
from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import StageResult
from vllm_matrix.knowledge import toolchains
from vllm_matrix.pipeline import advice
from vllm_matrix.pipeline.mapping import ReleaseFacts
from vllm_matrix.stages.preflight import apiscan

K = toolchains.load()
PINS = {"0.8.5": "2.6.0", "0.9.2": "2.7.0", "0.10.0": "2.7.1", "0.10.1": "2.7.1"}
F8 = next(s for s in K.api if s.name == "Float8_e8m0fnu")


def fake_facts(tmp_path: Path) -> dict[str, ReleaseFacts]:
    out = {}
    for v, pin in PINS.items():
        hits = (apiscan.ApiHit(F8, "csrc/gptq_marlin.cu", 911, "Float8_e8m0fnu"),)
        out[v] = ReleaseFacts(
            v,
            "0" * 64,
            tmp_path,
            dataclasses.replace(facts(pin), vllm=v),
            hits if v == "0.10.1" else (),
            (),
        )
    return out


@pytest.fixture
def adv(tmp_path: Path) -> advice.Adviser:
    rf = fake_facts(tmp_path)
    return advice.Adviser(know=K, pinned=PINS, facts=rf.__getitem__)


BLACKWELL_USER = advice.Have("2.6.0", "12.4", ("12.0",), "3.12", "0.8.5")


def test_blackwell_user_gets_the_smallest_change_first(adv: advice.Adviser) -> None:
    a = adv.advise(BLACKWELL_USER)
    assert not a.ok_as_is
    first, second = a.options[0], a.options[1]
    # keep vLLM 0.8.5: torch 2.7.0+cu128 (the oldest build with sm_120 code) and CUDA 12.8
    assert (first.vllm, first.torch, first.cuda) == ("0.8.5", "2.7.0+cu128", "12.8")
    assert first.changes == ("torch 2.6.0+cu124 → 2.7.0+cu128", "CUDA 12.4 → 12.8")
    assert "off vLLM 0.8.5's pin torch 2.6.0" in first.notes
    # on the same toolchain, the newest release pinned to its torch
    assert (second.vllm, second.torch, second.cuda) == ("0.9.2", "2.7.0+cu128", "12.8")
    combos = [o.combo() for o in a.options]
    assert len(combos) == len(set(combos))  # no repeats
    assert all(o.evidence == "preflight" for o in a.options)
    assert a.text().count("; or ") == len(a.options) - 1


def test_vllm_only_change_when_the_toolchain_serves(adv: advice.Adviser) -> None:
    a = adv.advise(advice.Have("2.6.0", "12.4", ("9.0",), "3.12", "0.10.1"))
    o = a.options[0]
    assert (o.vllm, o.torch, o.cuda, o.changes) == (
        "0.10.0",
        "2.6.0+cu124",
        "12.4",
        ("vLLM 0.10.1 → 0.10.0",),
    )
    assert adv.advise(advice.Have("2.6.0", "12.4", ("9.0",), "3.12", "0.8.5")).ok_as_is


def test_compiled_elsewhere_counts_with_its_machine(adv: advice.Adviser, tmp_path: Path) -> None:
    dev = tmp_path / "reports" / "device"
    cell = Cell("0.9.2", "2.7.0+cu128", "12.8", "system", "3.12", ("12.0",))
    mach = {"arch": "x86_64", "cpus": 16, "mem_gib": 126, "gpu": "NVIDIA H200"}
    stages = [StageResult("preflight", "warn", 0, ""), StageResult("probe", "pass", 1, "")]
    results.write(dev, cell, stages, mach)
    adv.compiled = advice.compiled_results(advice.result_dirs(tmp_path), K)
    o = adv.advise(BLACKWELL_USER).options[1]
    assert o.vllm == "0.9.2"
    assert o.evidence.startswith("PASS at probe on x86_64 16 cores 126 GiB, NVIDIA H200")


def test_every_command_gives_the_same_advice(
    adv: advice.Adviser, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = adv.advise(BLACKWELL_USER)
    # the Blackwell table: the option that keeps the release
    c = newest.cheapest("0.8.5", "12.0", know=K, pinned=PINS, adviser=adv)
    assert c.cell is not None and (c.cell.torch, c.cell.cuda) == ("2.7.0+cu128", "12.8")
    assert c.off_pin
    # newest with no release serving the arch: the advice without a vLLM
    ans = newest.walk("2.6.0", "12.4", ("12.0",), "3.12", know=K, pinned=PINS, adviser=adv)
    assert ans.newest is None and ans.advice is not None
    free = adv.advise(dataclasses.replace(BLACKWELL_USER, vllm=None))
    assert ans.advice.to_json() == free.to_json()
    assert (free.options[0].vllm, free.options[0].torch) == ("0.9.2", "2.7.0+cu128")
    assert len(newest.render(ans).splitlines()) <= newest.MAX_LINES
    # doctor: its fix is the advice's first option, with versions
    monkeypatch.setattr(advice, "adviser_for", lambda *a, **k: adv)
    r = doctor.Report("t")
    fix = doctor._advise(r, "2.6.0+cu124", "12.4", ("12.0",), "3.12")
    assert fix.startswith(free.options[0].combo())
    assert r.advice == [o.text() for o in free.options]
    # compat.md / the map: a predicted failure's fix is the stored advice, verbatim
    fail = results.Finding("torch-arch", "fail", "torch 2.6.0 has no kernels for sm_120", "x")
    pre = StageResult("preflight", "predicted-fail", 0, "", (fail,), {"advice": want.to_json()})
    assert results.verdict_of([pre]).fix == want.text()
    assert json.loads(json.dumps(want.to_json()))["text"] == want.text()


def test_a_missing_toolkit_is_not_compiled_here_never_a_bare_skip() -> None:
    ok = StageResult("preflight", "warn", 0, "", ())
    miss = results.Finding("toolkit", "skip", "no system CUDA 12.8 on this machine", "install it")
    v = results.verdict_of([ok, StageResult("toolkit", "skip", 0, "", (miss,))])
    assert (v.verdict, v.depth) == ("PREFLIGHT-OK", "preflight")
    assert v.cause == "not compiled here: no system CUDA 12.8 on this machine"
