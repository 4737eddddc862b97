"""`map-slice`: one arch's tables of the committed map, as markdown."""

from __future__ import annotations

import argparse

from vllm_matrix.commands.common import load_matrix
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.report import map as mapreport


def run(args: argparse.Namespace) -> int:
    """One arch's tables of the committed map (reports/map.json), as markdown."""
    _, ws = load_matrix(args)
    d = mapreport.read(ws.reports / "map.json") or mapreport.read(ws.results / "map.json")
    if not d:
        raise MatrixError(
            "no map data: neither reports/map.json nor results/map.json",
            fix="run `nox -s map` first",
        )
    tag = Arch.parse(args.arch).tag
    text = mapreport.slice_md(d, tag)
    if not text:
        have = ", ".join(mapreport.arch_order(d))
        raise MatrixError(f"the map has no {tag} cells", fix=f"pick one of: {have}")
    print(text, end="")
    return 0


__all__ = ["run"]
