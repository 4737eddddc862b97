from __future__ import annotations

from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet

from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell
from vllm_matrix.pipeline import context, reuse
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.patches import Applied, Patch
from vllm_matrix.stages.toolkit import Toolkit

CELL = Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", ("9.0",))


def ctx(tmp: Path, previous: dict[str, Any] | None = None) -> context.CellContext:
    c = context.CellContext(CELL, context.Workspace(tmp / "ws"), context.BuildOptions(), ())
    c.previous = previous
    c.tree = SourceTree("0.8.5", tmp / "src", "sdist vllm-0.8.5.tar.gz sha256:ab")
    c.toolkit = Toolkit(
        "debian", "12.4", "12.4.131", tmp / "tk", tmp / "tk/bin/nvcc", ("9.0",), 13, ()
    )
    c.env = TorchEnv("3.12", "2.6.0", "full", tmp, tmp / "py", tmp, "2.6.0+cu124", "12.4")
    patch = Patch("fix-x", tmp / "fix-x.patch", SpecifierSet("==0.8.5"), "why", "url", 1)
    c.applied = (Applied(patch, "applied"),)
    return c


def written(tmp: Path, probe: results.StageResult) -> dict[str, Any]:
    """The result file as a run that ended with ``probe`` left it."""
    ws = context.Workspace(tmp / "ws")
    results.write(ws.results, CELL, [probe], {"gpu": None})
    d = reuse.previous(ws, CELL)
    assert d is not None
    return d


def test_the_probe_inputs_are_structured(tmp_path: Path) -> None:
    got = reuse.probe_inputs(ctx(tmp_path))
    assert got == {
        "source": "sdist vllm-0.8.5.tar.gz sha256:ab",
        "toolkit": {"nvcc": "12.4.131", "provider": "debian", "root": str(tmp_path / "tk")},
        "torch": "2.6.0+cu124",
        "python": "3.12",
        "patches": {"fix-x": "applied"},
    }


def test_a_passed_probe_on_the_same_inputs_is_reused(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    inputs = reuse.probe_inputs(c)
    d = written(
        tmp_path, results.StageResult("probe", "pass", 9.0, "8 units", (), {"inputs": inputs})
    )
    c.previous = d
    again = reuse.passed_probe(c, inputs)
    assert again is not None and again.seconds == 9.0
    assert again.summary == f"8 units (reused: passed on the same inputs, {d['written']})"
    assert again.details["reused_from"] == d["written"]
    # Reused again: the summary does not grow, the first run's time stays.
    c.previous = written(tmp_path, again)
    twice = reuse.passed_probe(c, inputs)
    assert twice is not None and twice.summary == again.summary


def test_other_inputs_a_failed_probe_or_an_old_result_mean_a_new_probe(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    inputs = reuse.probe_inputs(c)
    c.previous = written(
        tmp_path, results.StageResult("probe", "pass", 9.0, "8 units", (), {"inputs": inputs})
    )
    assert reuse.passed_probe(c, inputs | {"torch": "2.6.0+cu126"}) is None
    c.previous = written(
        tmp_path, results.StageResult("probe", "fail", 9.0, "1 failed", (), {"inputs": inputs})
    )
    assert reuse.passed_probe(c, inputs) is None
    # Written before the probe's details held its inputs: not reused (it runs once more).
    c.previous = written(tmp_path, results.StageResult("probe", "pass", 9.0, "8 units"))
    assert reuse.passed_probe(c, inputs) is None
    c.previous = None
    assert reuse.passed_probe(c, inputs) is None


def test_keep_deeper_only_when_the_run_came_out_the_same() -> None:
    s = results.StageResult
    prev = [s("source", "pass", 0, "x"), s("facts", "pass", 0, "y"), s("probe", "pass", 0, "z")]
    d = {"stages": [p.to_json() for p in prev]}
    assert reuse.keep_deeper(d, prev[:2]) == prev
    other = [prev[0], s("facts", "fail", 0, "y")]
    assert reuse.keep_deeper(d, other) == other
    assert reuse.keep_deeper(None, other) == other
