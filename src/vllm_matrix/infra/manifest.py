"""What a cached tree (an assembled toolkit, a torch env) held when it was made: every file's
size, mtime and sha256, written at assembly; checked cheaply on each use (the size and
mtime of every file, the sha256 of a few key files: nvcc, cicc, cuda_runtime.h, torch's
extension.h ...) and fully by ``doctor --verify`` (every file's sha256).

A marker file says "this tree was finished"; the manifest says "and it is still what was
finished": flipped bytes in bin/nvcc or a deleted include/cuda_runtime.h are found before a
stage trusts the tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra.cache import atomic_write_text, sha256_file

NAME = ".vllm-matrix-manifest.json"
FORMAT = 1
# Written by Python on import, never part of what was assembled.
SKIP_DIRS = ("__pycache__",)


@dataclass(frozen=True)
class Manifest:
    files: dict[str, tuple[int, int, str]]  # rel path -> (size, mtime_ns, sha256)
    links: dict[str, str]  # rel path -> symlink target
    key: tuple[str, ...]  # checked by hash on every use

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": list(self.key),
            "files": {k: list(v) for k, v in sorted(self.files.items())},
            "links": dict(sorted(self.links.items())),
        }


def _walk(root: Path, ignore: Iterable[str]) -> tuple[dict[str, os.stat_result], dict[str, str]]:
    skip = {NAME, *ignore}
    files: dict[str, os.stat_result] = {}
    links: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            p = base / name
            rel = p.relative_to(root).as_posix()
            if rel in skip:
                continue
            if p.is_symlink():
                links[rel] = os.readlink(p)
            else:
                files[rel] = p.stat()
    return files, links


def make(root: Path, key: Sequence[str], ignore: Iterable[str] = ()) -> Manifest:
    """Every regular file under ``root`` (size, mtime, sha256) and every symlink; ``key``:
    the files whose hash is checked on each use (those that exist)."""
    files, links = _walk(root, ignore)
    out = {rel: (st.st_size, st.st_mtime_ns, sha256_file(root / rel)) for rel, st in files.items()}
    return Manifest(out, links, tuple(k for k in key if k in out))


def write(root: Path, key: Sequence[str], ignore: Iterable[str] = ()) -> Manifest:
    m = make(root, key, ignore)
    atomic_write_text(root / NAME, json.dumps(m.to_json()) + "\n")
    return m


def read(root: Path) -> Manifest | None:
    """The tree's manifest; None when it has none (made before manifests) or it is
    unreadable (then the tree is checked as one without)."""
    try:
        d = json.loads((root / NAME).read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:
            return None
        files = {str(k): (int(v[0]), int(v[1]), str(v[2])) for k, v in d["files"].items()}
        links = {str(k): str(v) for k, v in d["links"].items()}
        return Manifest(files, links, tuple(str(k) for k in d["key"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def problems(root: Path, m: Manifest, full: bool = False) -> list[str]:
    """What differs from the manifest: a file missing or resized; the content of a key file,
    of a file whose mtime moved (``full``: of every file); a symlink gone or retargeted.
    Empty when intact. Files added since (a .pyc, a log) are not problems."""
    out: list[str] = []
    for rel, (size, mtime, digest) in m.files.items():
        p = root / rel
        try:
            st = p.lstat()
        except FileNotFoundError:
            out.append(f"{rel} is missing")
            continue
        except OSError as exc:
            out.append(f"{rel} cannot be read ({exc.strerror})")
            continue
        if st.st_size != size:
            out.append(f"{rel} changed size ({size} -> {st.st_size} bytes)")
        # a rewritten file (mtime) is hashed: only a content change is damage
        elif (full or rel in m.key or st.st_mtime_ns != mtime) and sha256_file(p) != digest:
            out.append(f"{rel} changed content (sha256 differs)")
    for rel, target in m.links.items():
        p = root / rel
        if not p.is_symlink():
            out.append(f"{rel} is missing (a symlink)")
        elif os.readlink(p) != target:
            out.append(f"{rel} points elsewhere ({os.readlink(p)}, was {target})")
    return out


def describe(root_label: str, found: Sequence[str], n: int = 3) -> str:
    """One line: '<root> is damaged: a; b; c (and 4 more)'."""
    more = f" (and {len(found) - n} more)" if len(found) > n else ""
    return f"{root_label} is damaged: {'; '.join(found[:n])}{more}"


__all__ = ["NAME", "Manifest", "describe", "make", "problems", "read", "write"]
