"""`derive-facts`: knowledge/data/release_facts.json regenerated from every release's sdist.

The snapshot holds, per release of data/vllm_pins.toml that the index lists, the facts the
map's facts cache holds (pipeline/mapping.release_facts: SourceFacts, every known torch-API
use, the arch-gated kernel families) with the sdist's sha256 and the readers' code digest,
so the advice on a fresh machine reads no other release's sdist. Each release is read
from its tree here (never from the cache or the snapshot). Rerun it when a reader (stages/
facts.py, stages/preflight/apiscan.py, gates.py, cmake/) or data/api.toml changes: the
tests say so.
"""

from __future__ import annotations

import argparse
import sys

from packaging.version import Version

from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import mapping


def run(args: argparse.Namespace) -> int:
    listed = pins.release_list(refresh=True)
    if listed.index is None:
        raise MatrixError(
            "derive-facts needs the index's list of releases: " + listed.origin,
            fix="check the network / pip's index-url (and VLLM_MATRIX_RELEASES is not pinned)",
        )
    pinned = pins.load()
    vs = [v for v in listed.versions if v in pinned]
    missing = sorted(set(listed.versions) - set(pinned), key=Version)
    if missing:
        print(
            f"not in vllm_pins.toml, left out: {', '.join(missing)} (run `inv derive-pins "
            "--write` first)",
            file=sys.stderr,
        )
    know = toolchains.load()
    rfs = []
    for n, v in enumerate(vs, 1):
        rf = mapping.read_release(v, know)
        rfs.append(rf)
        print(
            f"[{n}/{len(vs)}] {v}: {len(rf.hits)} API uses, {len(rf.gates)} gates",
            file=sys.stderr,
            flush=True,
        )
    text = mapping.render_snapshot(rfs, know)
    if args.write:
        atomic_write_text(mapping.snapshot_path(), text)
        print(f"wrote {mapping.snapshot_path()} ({len(text)} bytes)", file=sys.stderr)
    else:
        print(text, end="")
    return 0


__all__ = ["run"]
