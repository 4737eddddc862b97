"""`cells`: the matrix's cell ids."""

from __future__ import annotations

import argparse

from vllm_matrix.commands.common import load_matrix


def run(args: argparse.Namespace) -> int:
    m, _ = load_matrix(args)
    for c in m.cells:
        print(c.id)
    return 0


__all__ = ["run"]
