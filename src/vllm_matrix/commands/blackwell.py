"""`blackwell`: per release, the cheapest toolchain that serves an arch (preflight), into
results/blackwell.json (`nox -s report` puts it into reports/blackwell.md)."""

from __future__ import annotations

import argparse
import json

from vllm_matrix.commands import newest
from vllm_matrix.commands.common import load_matrix, say
from vllm_matrix.infra.arch import parse_arch_list
from vllm_matrix.infra.cache import atomic_write_text


def run(args: argparse.Namespace) -> int:
    _, ws = load_matrix(args)
    arch = parse_arch_list(args.arch)[0]
    rows = []
    for v in args.vllm or ["0.8.5", "0.9.2", "0.10.1"]:
        say(f"vLLM {v}: cheapest toolchain for {arch}")
        rows.append(newest.cheapest(v, arch, ws=ws).to_json())
    top = newest.newest_serving(arch)
    doc = {
        "arch": arch,
        "depth": "preflight",
        "releases": rows,
        "newest": top.to_json() if top else None,
    }
    # results/ is not tracked: `nox -s report` puts it into reports/ (a query writes no report)
    path = ws.results / "blackwell.json"
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    print(
        json.dumps(doc, indent=1)
        if args.json
        else f"wrote results/{path.name}; `nox -s report` puts it into reports/blackwell.md"
    )
    return 0


__all__ = ["run"]
