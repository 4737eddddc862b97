"""`facts`: the pins and facts read from a vLLM source tree."""

from __future__ import annotations

import argparse
import json

from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts


def run(args: argparse.Namespace) -> int:
    tree = source.get_tree(args.version)
    f = facts.read_facts(tree.root, tree.version)
    d = f.to_json() | {"origin": tree.origin}
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        for k, v in d.items():
            print(f"{k:16} {v}")
    return 0


__all__ = ["run"]
