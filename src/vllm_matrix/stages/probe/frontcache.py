"""Front-end results cached by content: a unit whose preprocessed input is unchanged
between neighbouring releases (or cells) is not run through cudafe++ twice.

The key is the sha256 of
- the unit's preprocessed host input (the .cpp4.ii cudafe++ reads: every header the unit
  includes, torch's among them, after macro expansion), with the paths that differ between
  cells but not in content (the release's tree, the probe's work dir) normalised;
- cudafe++'s argument list, normalised the same way (flags, defines, the source name);
- the nvcc version (cudafe++ is nvcc's front end).
Only passes are stored: a failing front end reruns, so its log is always this run's own.

Cache layout: <cache>/frontend/ab/<sha256>.json  {"unit", "seconds", "stored"}
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from vllm_matrix.infra.cache import atomic_write_text, cache_root

SCHEMA = b"vllm-matrix/front-end-cache 1"


def _normalise(data: bytes, roots: dict[str, str]) -> bytes:
    # longest first: the work dir may sit inside the tree's parent, never the other way
    for path in sorted(roots, key=len, reverse=True):
        data = data.replace(path.encode(), roots[path].encode())
    return data


def preprocessed_input(argv: Sequence[str]) -> Path | None:
    """The .ii file cudafe++ reads: its last argument that names an existing .ii file."""
    for a in reversed(argv):
        if a.endswith(".ii") and Path(a).is_file():
            return Path(a)
    return None


class FrontEndCache:
    def __init__(self, nvcc_version: str, root: Path | None = None) -> None:
        self.nvcc = nvcc_version
        self.dir = (root or cache_root()) / "frontend"

    def key(self, argv: Sequence[str], roots: dict[str, str]) -> str | None:
        ii = preprocessed_input(argv)
        if ii is None:
            return None
        h = hashlib.sha256(SCHEMA)
        h.update(self.nvcc.encode())
        h.update(b"\0")
        h.update(_normalise("\0".join(argv[1:]).encode(), roots))
        h.update(b"\0")
        h.update(_normalise(ii.read_bytes(), roots))
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def passed(self, key: str) -> bool:
        return self._path(key).is_file()

    def store(self, key: str, unit: str, seconds: float) -> None:
        d = {
            "unit": unit,
            "seconds": round(seconds, 1),
            "nvcc": self.nvcc,
            "stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_text(self._path(key), json.dumps(d) + "\n")
