"""What several commands share: the matrix they load, how they speak to stderr, and the exit
code a set of verdicts or unreadable result files makes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vllm_matrix.infra import config, results
from vllm_matrix.infra.errors import EXIT_CELL_ERROR, MatrixError
from vllm_matrix.pipeline import context, grid


def load_matrix(args: argparse.Namespace) -> tuple[config.Matrix, context.Workspace]:
    path = Path(args.matrix).resolve()
    m = config.load_matrix(path)
    grid.cells_of(m)  # a bad [grid] axis is an error at load, like a bad [[cell]]
    grid.check_cells(m)  # a [[cell]] naming no real vLLM or torch release: "did you mean"
    return m, context.Workspace(path.parent)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_cell(m: config.Matrix, name: str | None, also: str = "") -> config.Cell:
    """The one matrix cell ``--cell NAME`` names (an id or a unique part of it)."""
    cells = m.select(name)
    if len(cells) != 1:
        raise MatrixError(
            f"--cell '{name or ''}' matches {len(cells)} cells",
            fix=f"name one{also}: " + ", ".join(c.id for c in cells),
        )
    return cells[0]


def skipped(skipped: Sequence[dict[str, str]]) -> int:
    """Warn about result files the report could not read (named, with the reason; their
    cells are shown as not run); EXIT_CELL_ERROR when there were any: the report is not
    the whole answer."""
    for x in skipped:
        say(f"warning: skipped {x['file']}: {x['reason']}")
    if skipped:
        say(
            f"error: {len(skipped)} result file(s) could not be read and were left out of the "
            "report; fix: delete or move them, then rerun the cells (`nox -s matrix -- --cell ID`)"
        )
        return EXIT_CELL_ERROR
    return 0


def exit_for(verdicts: Sequence[results.CellVerdict]) -> int:
    """Non-zero when a cell ended in ERROR: the tool or the machine failed, so the report
    is not a complete answer (FAIL and PREDICTED-FAIL are answers: exit 0)."""
    bad = sum(1 for v in verdicts if v.verdict == results.Verdict.ERROR)
    if bad:
        print(
            f"error: {bad} cell(s) ended in ERROR (the tool or the machine failed, not vLLM): "
            "see each cell's fix above and compat.md's 'Not answered' section",
            file=sys.stderr,
        )
        return EXIT_CELL_ERROR
    return 0


__all__ = ["exit_for", "load_matrix", "one_cell", "say", "skipped"]
