"""`modelopt-check`: a ModelOpt hf_quant_config.json through the release's own parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.preflight import modelopt


def run(args: argparse.Namespace) -> int:
    tree = source.get_tree(args.vllm)
    cfg = json.loads(Path(args.config).read_text()) if args.config else modelopt.EXAMPLE
    c = modelopt.check(tree.root, cfg)
    print(json.dumps(c.to_json(), indent=1) if args.json else f"{c.message}\n  ({c.how})")
    return 0 if c.accepted else 1


__all__ = ["run"]
