"""`prefetch`: a vLLM version's FetchContent sources (CUTLASS, FA, FlashMLA) into the cache."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vllm_matrix.knowledge import probe_units
from vllm_matrix.sources import externals
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts


def run(args: argparse.Namespace) -> int:
    tree = source.get_tree(args.vllm)
    f = facts.read_facts(tree.root, tree.version)
    log = Path(args.log).resolve() if args.log else None
    dirs = externals.prefetch(
        f,
        probe_units.load_knowledge(),
        git_dirs=[Path(d) for d in args.git],
        network=not args.offline,
        log=log,
    )
    if args.json:
        out = {
            k: {
                "pin": d.pin,
                "status": d.status,
                "path": str(d.path) if d.path else None,
                "origin": d.origin,
                "env_var": d.env_var,
                "incomplete": list(d.incomplete),
                "repo": d.repo,
            }
            for k, d in dirs.items()
        }
        print(json.dumps(out, indent=1))
    else:
        for d in dirs.values():
            pin = d.pin if d.pin and len(d.pin) < 40 else (d.pin or "?")[:12]
            where = f"{d.path}  ({d.origin})" if d.path else externals.reason(d)
            print(f"{d.name:16} {pin:12} {d.status:10} {where}")
    err = externals.missing_error(tree.version, dirs)
    if err is None:
        return 0
    print(f"error: {err.message}", file=sys.stderr)
    print(f"  fix: {err.fix}", file=sys.stderr)
    return 1


__all__ = ["run"]
