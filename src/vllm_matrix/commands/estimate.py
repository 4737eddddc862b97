"""`estimate`: what building a cell or release costs on a machine, before building (a query)."""

from __future__ import annotations

import argparse
import json

from vllm_matrix.commands.common import load_matrix, one_cell
from vllm_matrix.commands.release import release_cell
from vllm_matrix.pipeline import estimate, reuse
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import compile as build


def run(args: argparse.Namespace) -> int:
    m, ws = load_matrix(args)
    if args.version:
        cell = release_cell(args)
    else:
        cell = one_cell(m, args.cell, " (or a release: estimate 0.8.5)")
    tree = source.get_tree(cell.source_spec)
    est = estimate.estimate_cell(
        cell,
        tree.root,
        previous=reuse.previous(ws, cell),
        cores=args.cores,
        mem_gib=args.mem,
        jobs=args.max_jobs,
        targets=build.parse_targets(args.targets),
    )
    if args.json:
        print(json.dumps(est, indent=1))
        return 0
    where = f"{est['cores']} cores" + (
        f", {est['mem_gib']:g} GiB available" if est["mem_gib"] is not None else ""
    )
    print(f"{cell.id} on {where}:")
    for kind in ("wheel", "partial"):
        if kind in est:
            print(f"  {estimate.say(est, kind)}")
    return 0


__all__ = ["run"]
