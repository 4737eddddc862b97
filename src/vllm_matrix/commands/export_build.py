"""`export-build`: a cell's installable partial build and its build record, in a directory
another machine can take with `run --built DIR` (stages/compile/carried.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vllm_matrix.commands.common import load_matrix, one_cell, say
from vllm_matrix.infra import results
from vllm_matrix.infra.errors import MatrixError, ToolError
from vllm_matrix.stages import compile as build
from vllm_matrix.stages.compile import carried


def run(args: argparse.Namespace) -> int:
    m, ws = load_matrix(args)
    cell = one_cell(m, args.cell)
    path = ws.results / f"{cell.id}.json"
    try:
        envelope = results.read(path)
    except FileNotFoundError as exc:
        raise MatrixError(
            f"{cell.id}: no result file yet ({path.name})",
            fix=f"build it first: vllm-matrix run --cell {cell.id} --depth build --targets ...",
        ) from exc
    except (ValueError, KeyError) as exc:
        raise ToolError(
            f"{cell.id}: its result file is unreadable ({exc})",
            fix=f"rerun the build (it resumes): vllm-matrix run --cell {cell.id} --depth build",
        ) from exc
    dest = carried.export(envelope, build.work_dir(cell), Path(args.out), strip=args.strip_debug)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    for s in carried.read(dest)[1]["stripped"]:
        before, after = s["bytes_before"] / 2**20, s["bytes"] / 2**20
        say(f"stripped {s['path']}: {before:.1f} -> {after:.1f} MiB")
    print(
        f"{dest} ({size / 2**20:.1f} MiB): on the GPU machine, "
        f"vllm-matrix run --env current --vllm {cell.vllm} --arch '{';'.join(cell.arch)}' "
        f"--depth model --built DIR"
    )
    return 0


__all__ = ["run"]
