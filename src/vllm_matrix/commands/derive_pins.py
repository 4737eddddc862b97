"""`derive-pins`: knowledge/data/vllm_pins.toml regenerated from every release's sdist."""

from __future__ import annotations

import argparse
import sys

from packaging.version import Version

from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts


def run(args: argparse.Namespace) -> int:
    rows: dict[str, tuple[str | None, str]] = {}
    listed = pins.release_list(refresh=True)
    if listed.index is None:
        raise MatrixError(
            "derive-pins needs the index's list of releases: " + listed.origin,
            fix="check the network / pip's index-url (and VLLM_MATRIX_RELEASES is not pinned)",
        )
    vs = [v for v in map(Version, listed.versions) if v >= Version(args.since)]
    for n, v in enumerate(vs, 1):
        tree = source.sdist_tree(str(v))
        f = facts.read_facts(tree.root, tree.version)
        rows[str(v)] = (f.torch, f.torch_evidence or "")
        print(f"[{n}/{len(vs)}] {v}: torch {f.torch}", file=sys.stderr, flush=True)
    text = pins.render(rows)
    if args.write:
        atomic_write_text(pins.data_path(), text)
        print(f"wrote {pins.data_path()}", file=sys.stderr)
    else:
        print(text)
    return 0


__all__ = ["run"]
