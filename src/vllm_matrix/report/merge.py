"""One report from result files made on many machines (``report --merge DIR...``).

Each CI job (``inv ci-matrix``) runs a cell on its own runner and keeps
``results/<cell-id>.json``; the last job gathers those files into directories and merges
them here. Every file is read on its own: a malformed one, or one of another schema or
schema version, is refused with the reason and its name, and the others are merged all
the same (the CLI then exits 1, so a CI run does not publish a silently thinner map).

The same cell from several machines: the run with evidence beats one without (UNKNOWN,
ERROR: the tool or the machine failed, nothing learned about vLLM), then the deeper
(stage order), then the newer (``written``). The row shows the winner's machine; its
details list every run of the cell, the winner marked.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import results
from vllm_matrix.infra.config import Matrix
from vllm_matrix.infra.errors import MatrixError, ToolError
from vllm_matrix.infra.results import Verdict
from vllm_matrix.report import compat as report

# Verdicts that say nothing about vLLM: never chosen over a run that does.
NO_EVIDENCE = (Verdict.UNKNOWN, Verdict.ERROR)


def depth_rank(depth: str) -> int:
    """0 for no depth (or one no stage has), else 1 + the stage's place in PLAN."""
    return results.STAGE_ORDER.index(depth) + 1 if depth in results.STAGE_ORDER else 0


@dataclass(frozen=True)
class Refused:
    file: str  # relative to the directory it was found in, prefixed by that dir's name
    reason: str


@dataclass(frozen=True)
class Run:
    file: str
    row: dict[str, Any]

    @property
    def key(self) -> tuple[bool, int, str]:
        return (
            self.row["verdict"] not in NO_EVIDENCE,
            depth_rank(self.row["depth"]),
            self.row["written"] or "",
        )


def _label(path: Path, root: Path) -> str:
    """A name for ``path`` that names no directory of this machine: ``DIR/rel/path``."""
    return str(Path(root.name) / path.relative_to(root))


def find_files(dirs: Sequence[Path]) -> list[tuple[Path, str]]:
    """Every ``*.json`` under each dir (CI artifact downloads nest one level per job)."""
    found: list[tuple[Path, str]] = []
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(d)
        found += [(p, _label(p, d)) for p in sorted(d.rglob("*.json")) if p.is_file()]
    return found


def read_run(path: Path, label: str) -> Run | Refused:
    """One result file as a report row, or why it is refused (results.read checks the
    schema, the status enum, the cell id and the sizes)."""
    try:
        d = results.read(path)
    except results.ResultFormatError as exc:
        return Refused(label, exc.reason)
    except OSError as exc:
        return Refused(label, f"cannot be read ({exc.strerror})")
    try:
        cell_id = d["cell"]["id"]
        row = report._row(cell_id, d)
        if not isinstance(row["machine"], dict):
            raise TypeError("machine is not an object")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Refused(label, f"malformed result ({type(exc).__name__}: {exc})")
    return Run(label, row)


def _run_line(run: Run, chosen: bool) -> str:
    r = run.row
    mach = results.machine_label(r["machine"])
    why = "chosen" if chosen else "not chosen"
    return f"{why}: {r['verdict']} at {r['depth']} on {mach}, written {r['written']} (`{run.file}`)"


def pick(runs: Sequence[Run]) -> tuple[Run, list[Run]]:
    """The winner (evidence, then depth, then newest) and the others, best first."""
    ordered = sorted(runs, key=lambda r: r.key, reverse=True)
    return ordered[0], ordered[1:]


def _merged_row(runs: Sequence[Run]) -> dict[str, Any]:
    best, rest = pick(runs)
    row = dict(best.row)
    row["runs"] = [
        {
            "file": r.file,
            "chosen": r is best,
            "verdict": r.row["verdict"],
            "depth": r.row["depth"],
            "written": r.row["written"],
            "machine": r.row["machine"],
        }
        for r in (best, *rest)
    ]
    if rest:
        row["notes"] = [
            f"run on {len(runs)} machines; the run with evidence, then the deeper, then "
            "the newer is shown",
            *(_run_line(r, r is best) for r in (best, *rest)),
        ]
    return row


def collect(
    matrix: Matrix, dirs: Sequence[Path], other_dir: Path | None = None
) -> tuple[dict[str, Any], list[Refused]]:
    """The report document from the result files under ``dirs``, and the refused files.

    Cells of the matrix come out in its order (UNKNOWN where no file has them); result
    files of cells the matrix does not have join ``other_runs``."""
    by_id: dict[str, list[Run]] = {}
    refused: list[Refused] = []
    found = find_files(dirs)
    names = ", ".join(Path(d).name for d in dirs)
    if not found:  # never a report of every cell UNKNOWN from nothing
        raise MatrixError(
            f"--merge: no result files (*.json) under {names}",
            fix="pass the directories the runs wrote their results/ into (CI: the downloaded "
            "artifacts)",
        )
    for path, label in found:
        got = read_run(path, label)
        if isinstance(got, Refused):
            refused.append(got)
        else:
            by_id.setdefault(got.row["id"], []).append(got)
    if not by_id:
        raise ToolError(
            f"--merge: none of the {len(refused)} file(s) under {names} is a readable result: "
            + "; ".join(f"{x.file}: {x.reason}" for x in refused[:5]),
            fix="merge the results/ directories the runs wrote (vllm-matrix/cell-result files)",
        )
    # The matrix's rows, UNKNOWN where no file has the cell, as the one-machine report
    # makes them (from an empty results dir); then each cell with runs replaced.
    with tempfile.TemporaryDirectory() as empty:
        base = report.collect(matrix, Path(empty), other_dir)
    rows = [_merged_row(by_id.pop(r["id"])) if r["id"] in by_id else r for r in base["cells"]]
    extra = [_merged_row(runs) for _, runs in sorted(by_id.items())]
    doc = base | {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": rows,
        "other_runs": base["other_runs"] + extra,
        "merged": {
            "dirs": [Path(d).name for d in dirs],
            "files": sum(len(r.get("runs", [])) for r in rows + extra),
            "refused": [{"file": x.file, "reason": x.reason} for x in refused],
        },
    }
    return doc, refused
