"""`derive-torch`: torch wheel facts as TOML, read from the real wheels."""

from __future__ import annotations

import argparse
from pathlib import Path

from vllm_matrix.infra import config
from vllm_matrix.sources import torchwheel


def run(args: argparse.Namespace) -> int:
    table: dict[str, str] = {}
    path = Path(args.matrix)
    if path.is_file():  # its [torch-index] table, for variants ("2.7.1+cu128")
        table = dict(next(iter(config.load_matrix(path).cells)).torch_index)
    for v in args.versions:
        variant = config.split_torch(v)[1]
        base = torchwheel.variant_index(variant, table) if variant else None
        print(torchwheel.toml_entry(torchwheel.read_facts(v, base)))
    return 0


__all__ = ["run"]
