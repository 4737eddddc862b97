"""The map's logic on fixtures: boundaries, which of them a probe can check, the probe
budget, verdicts from deeper results, toolchain choice for any release."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell, Matrix
from vllm_matrix.infra.results import FAIL, PASS, PREDICTED_FAIL, Finding, StageResult
from vllm_matrix.knowledge import toolchains
from vllm_matrix.pipeline import mapping
from vllm_matrix.pipeline.mapping import MapCell


def mc(
    v: str,
    t: str,
    verdict: str,
    rules: tuple[str, ...] = (),
    arch: str = "9.0",
    cuda: str = "12.4",
    provider: str = "debian",
    here: str = "",
) -> MapCell:
    c = Cell(v, t, cuda, provider, "3.11", (arch,))
    return MapCell(c, verdict, "preflight", "why" if rules else "", "", (), False, here, rules)


API = ("api-Float8_e8m0fnu",)


def grid() -> list[MapCell]:
    # rows 0.10.0, 0.10.1; cols 2.6.0, 2.7.0: 0.10.1 x 2.6.0 fails on the API scan
    return [
        mc("0.10.0", "2.6.0", "PREFLIGHT-OK"),
        mc("0.10.0", "2.7.0", "PREFLIGHT-OK"),
        mc("0.10.1", "2.6.0", "PREDICTED-FAIL", API),
        mc("0.10.1", "2.7.0", "PREFLIGHT-OK"),
        # another table: sm_120 with nvcc 12.4 fails everywhere: no boundary inside it
        mc("0.10.0", "2.6.0", "PREDICTED-FAIL", ("nvcc-arch",), arch="12.0"),
        mc("0.10.1", "2.6.0", "PREDICTED-FAIL", ("nvcc-arch",), arch="12.0"),
    ]


def test_boundaries_between_neighbours_in_one_table() -> None:
    bs = mapping.boundaries(grid())
    got = sorted(
        (b.axis, b.ok.cell.vllm, b.ok.cell.torch, b.bad.cell.vllm, b.bad.cell.torch) for b in bs
    )
    assert got == [
        ("torch", "0.10.1", "2.7.0", "0.10.1", "2.6.0"),
        ("vllm", "0.10.0", "2.6.0", "0.10.1", "2.6.0"),
    ]


def test_only_compile_checkable_obtainable_boundaries_are_planned() -> None:
    cells = grid()
    cells.append(mc("0.9.2", "2.6.0", "PREDICTED-FAIL", ("python-cmake",)))  # not compile-checkable
    plan = mapping.plan_probes(mapping.boundaries(cells))
    assert [b.axis for b, _ in plan] == ["torch", "vllm"]  # torch-axis boundaries first
    b, todo = plan[0]
    assert [c.id for c in todo] == [b.ok.cell.id, b.bad.cell.id]  # ok side first
    # a toolkit this machine cannot supply: nothing to plan
    far = [
        mc(m.cell.vllm, m.cell.torch, m.verdict, m.rules, here="no system CUDA 12.8")
        for m in grid()
    ]
    assert mapping.plan_probes(mapping.boundaries(far)) == []


def _write(results_dir: Path, cell: Cell, status: str, force: bool) -> None:
    pre = StageResult(
        "preflight",
        PREDICTED_FAIL if force else PASS,
        0.0,
        "",
        (Finding("api-x", "fail", "uses x", "torch ≥ 2.7"),) if force else (),
    )
    probe = StageResult(
        "probe",
        status,
        1.0,
        "",
        (Finding("probe", "fail", "error: x", ""),) if status == FAIL else (),
    )
    results.write(results_dir, cell, [pre, probe], {"cpus": 2})


def _matrix(cells: list[MapCell]) -> tuple[Cell, ...]:
    return tuple(m.cell for m in cells)


def test_probes_confirm_a_boundary_within_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = grid()
    monkeypatch.setattr(mapping, "preflight_all", lambda cs, know=None, echo=None: list(cells))
    calls = []

    def probe(cell: Cell, force: bool) -> None:
        calls.append((cell.id, force))
        _write(tmp_path, cell, FAIL if force else PASS, force)

    run = mapping.run_map(_matrix(cells), tmp_path, probe, 1000, probe_cost_s=0)
    assert calls[:2] == [
        ("vllm0.10.1-torch2.7.0-cu12.4-py3.11-sm90", False),
        ("vllm0.10.1-torch2.6.0-cu12.4-py3.11-sm90", True),
    ]
    assert len(run.confirmed) == 2  # both boundaries: 0.10.0 x 2.6.0 probed as well
    assert run.contradicted == ()
    byid = {m.cell.id: m for m in run.cells}
    assert byid["vllm0.10.1-torch2.6.0-cu12.4-py3.11-sm90"].verdict == "FAIL"
    assert byid["vllm0.10.1-torch2.6.0-cu12.4-py3.11-sm90"].depth == "probe"
    d = run.to_json()
    assert d["counts"]["cells"] == 6 and d["probes"]["probed"] == [c for c, _ in calls]


def test_budget_stops_probes_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cells = grid()
    monkeypatch.setattr(mapping, "preflight_all", lambda cs, know=None, echo=None: list(cells))
    calls = []
    now = [0.0]

    def probe(c: Cell, force: bool) -> None:
        calls.append(c.id)
        now[0] += 190  # what a probe takes on 2 shared cores

    run = mapping.run_map(
        _matrix(cells), tmp_path, probe, 450, probe_cost_s=200, clock=lambda: now[0]
    )
    assert len(calls) == 2 and run.confirmed == ()
    assert run.probe_spent_s == 380
    assert run.notes and "budget" in run.notes[0]


def test_a_forced_probe_that_compiles_contradicts_the_prediction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = grid()
    monkeypatch.setattr(mapping, "preflight_all", lambda cs, know=None, echo=None: list(cells))
    run = mapping.run_map(
        _matrix(cells), tmp_path, lambda c, f: _write(tmp_path, c, PASS, f), 1000, probe_cost_s=0
    )
    assert "vllm0.10.1-torch2.6.0-cu12.4-py3.11-sm90" in run.contradicted
    assert run.confirmed == ()


def test_no_grid_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(mapping.MatrixError, match="no \\[grid\\]"):
        mapping.grid_cells(Matrix(Path("m.toml"), ()))


@pytest.mark.parametrize(
    ("torch_cuda", "provider", "expect"),
    [
        ("12.4", None, ("12.4", "debian")),  # torch 2.6.0+cu124: Debian's 12.4
        ("12.6", None, ("12.4", "debian")),  # torch 2.7.x+cu126: nearest older, same major
        ("12.8", None, ("12.4", "debian")),
        ("13.0", None, ("13.0", "pypi")),  # torch 2.11.0+cu130
        ("13.2", None, ("13.2", "pypi")),
        ("12.1", "pypi", ("12.1", "pypi")),  # pypi has no CUDA 12 nvcc: stays asked-for
        ("11.8", None, ("11.8", "debian")),
    ],
)
def test_toolchain_for(torch_cuda: str, provider: str | None, expect: tuple[str, str]) -> None:
    assert mapping.toolchain_for(torch_cuda, toolchains.load(), provider) == expect


def test_the_map_names_no_path_of_the_machine() -> None:
    m = mc(
        "0.10.2",
        "2.8.0",
        "PREFLIGHT-OK",
        cuda="12.8",
        provider="system",
        here="no system CUDA 12.8 on this machine (found: 13.0 (/usr/local/cuda-13.0))",
    )
    m = mapping.dataclasses.replace(m, cause="command not found: /root/.cache/x/bin/nvcc")
    run = mapping.MapRun([m], 1.0, 1, 1, 1)
    d = run.to_json()
    text = str(d)
    assert "/usr/local" not in text and "/root" not in text
    assert d["cells"][0]["here"] == "no system CUDA 12.8 on this machine (found: 13.0)"
    assert d["causes"][0]["cause"] == "command not found: …"


def test_earlier_compiles_count_where_results_have_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = grid()
    monkeypatch.setattr(mapping, "preflight_all", lambda cs, know=None, echo=None: list(cells))
    ok, bad = "vllm0.10.1-torch2.7.0-cu12.4-py3.11-sm90", "vllm0.10.1-torch2.6.0-cu12.4-py3.11-sm90"
    earlier = {
        ok: {"verdict": {"verdict": "PASS", "depth": "probe"}},
        bad: {"verdict": {"verdict": "FAIL", "depth": "probe", "cause": "error: x"}},
    }
    run = mapping.run_map(_matrix(cells), tmp_path, earlier=earlier)  # an empty results/
    byid = {m.cell.id: m for m in run.cells}
    assert (byid[bad].verdict, byid[bad].depth, byid[bad].cause) == ("FAIL", "probe", "error: x")
    assert len(run.confirmed) == 1  # the torch-axis boundary, compiled on both sides
    # a result of this machine outranks the earlier one
    _write(tmp_path, cells[3].cell, PASS, force=False)
    _write(tmp_path, cells[2].cell, PASS, force=True)
    again = {m.cell.id: m for m in mapping.run_map(_matrix(cells), tmp_path, earlier=earlier).cells}
    assert again[bad].verdict != "FAIL"
