"""Run cells stage by stage up to a depth; write one result file per cell.

A stage runs only if the earlier ones allow it. Ctrl-C leaves a valid result
(the running stage marked interrupted) and re-raises.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import facts as facts_mod
from . import knowledge, pins, preflight, results, source
from .config import Cell, Matrix
from .errors import MatrixError, SourceError
from .results import FAIL, INTERRUPTED, PASS, SKIP, Finding, StageResult

# Depths in order; later issues plug their stages in here.
DEPTHS = ("preflight", "toolkit", "probe", "build")
IMPLEMENTED = ("preflight",)
DEFAULT_DEPTH = "preflight"  # the deepest that fits on any machine today


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def logs(self, cell: Cell) -> Path:
        return self.results / "logs" / cell.id


def check_depth(depth: str) -> None:
    if depth not in DEPTHS:
        from .tomlfile import did_you_mean

        raise MatrixError(f"unknown depth '{depth}'", fix=did_you_mean(depth, DEPTHS))
    if depth not in IMPLEMENTED:
        raise MatrixError(
            f"depth '{depth}' is not there yet: this version runs {', '.join(IMPLEMENTED)}",
            fix=f"use --depth {IMPLEMENTED[-1]} (the {depth} stage is being built)",
        )


def _timed(stage: str, fn: Callable[[], StageResult]) -> StageResult:
    t0 = time.monotonic()
    try:
        r = fn()
    except SourceError as exc:
        r = StageResult(
            stage, FAIL, 0.0, exc.message, (Finding(stage, "fail", exc.message, exc.fix or ""),)
        )
    return StageResult(
        r.stage, r.status, round(time.monotonic() - t0, 3), r.summary, r.findings, r.details, r.log
    )


def run_cell(
    cell: Cell, ws: Workspace, depth: str = DEFAULT_DEPTH, mach: dict[str, Any] | None = None
) -> list[StageResult]:
    stages: list[StageResult] = []
    state: dict[str, Any] = {}
    mach = mach or results.machine()
    current = "source"

    def do_source() -> StageResult:
        tree = source.get_tree(cell.source_spec)
        state["tree"] = tree
        return StageResult("source", PASS, 0.0, tree.origin, details={"root": str(tree.root)})

    def do_facts() -> StageResult:
        f = facts_mod.read_facts(state["tree"].root, state["tree"].version)
        state["facts"] = f
        return StageResult(
            "facts",
            PASS,
            0.0,
            f"torch pin {f.torch}, cutlass {f.cutlass}, cmake ≥ {f.cmake}",
            details=f.to_json(),
        )

    def do_preflight() -> StageResult:
        f = state["facts"]
        know = knowledge.load()
        found = preflight.check(
            cell, f, know, state["tree"].root, preflight.detect_host(), pins.load()
        )
        return StageResult(
            "preflight",
            preflight.status_of(found),
            0.0,
            preflight.summary_of(found),
            tuple(found),
            details=dict(
                zip(
                    ("modelopt_fp8", "modelopt_evidence"),
                    preflight.modelopt_column(cell, f),
                    strict=True,
                )
            ),
        )

    plan: list[tuple[str, Callable[[], StageResult]]] = [
        ("source", do_source),
        ("facts", do_facts),
        ("preflight", do_preflight),
    ]
    try:
        for name, fn in plan:
            current = name
            r = _timed(name, fn)
            stages.append(r)
            if r.status not in (PASS, results.WARN) or name == depth:
                break
    except KeyboardInterrupt:
        stages.append(StageResult(current, INTERRUPTED, 0.0, "interrupted (Ctrl-C)"))
        results.write(ws.results, cell, stages, mach)
        raise
    results.write(ws.results, cell, stages, mach)
    return stages


def run_matrix(
    matrix: Matrix,
    ws: Workspace,
    depth: str = DEFAULT_DEPTH,
    select: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[tuple[Cell, results.Verdict]]:
    check_depth(depth)
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    cells = matrix.select(select)
    mach = results.machine()
    out = []
    for n, cell in enumerate(cells, 1):
        t0 = time.monotonic()
        stages = run_cell(cell, ws, depth, mach)
        v = results.verdict_of(stages)
        echo(
            f"[{n}/{len(cells)}] {cell.id}: {v.verdict} at {v.depth} ({time.monotonic() - t0:.1f}s)"
        )
        out.append((cell, v))
    return out


__all__ = ["DEPTHS", "SKIP", "Workspace", "check_depth", "run_cell", "run_matrix"]
