"""Paths as a reader of the reports can use them: never the machine's that made them.

Result files and reports name files by symbolic roots, not by where they lay:

- the workspace's own files relative to it: ``results/logs/<cell>/probe/probe.log``;
- the project cache as ``$VLLM_MATRIX_CACHE/toolkits/debian-12.4``;
- a virtual environment's root as ``$VIRTUAL_ENV``;
- the home directory as ``~``, the temp directory as ``$TMPDIR``.

This machine's roots are known (``Roots.here``). A file made elsewhere (a GPU host's
result copied into reports/device/, an older result) names roots this machine never had:
they are recognised by what lies below them (``<root>/results/logs/``,
``<root>/toolkits/``, ``<root>/src/vllm-0.8.5-…``) and replaced wherever they occur in the
same document. Standard system locations (``/usr/local/cuda``) say nothing about a machine
and stay.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = "$VLLM_MATRIX_CACHE"
VENV = "$VIRTUAL_ENV"
TMP = "$TMPDIR"
HOME = "~"

# A path segment, and an absolute path's start: not inside a word, a URL or a relative path.
_SEG = r"[^\s/\"'`()<>\[\]{},;:=]+"
_START = r"(?<![\w.$~/-])"
# <workspace>/results/logs/... : the workspace is the part before results/logs.
_WORKSPACE = re.compile(_START + rf"((?:/{_SEG})+?)/results/logs(?=/)")
# The cache's own layout (cache.py, stages/toolkit/, env.py, source.py, build/ ...).
_CACHE = re.compile(
    _START
    + rf"((?:/{_SEG})+?)/(?:toolkits/(?:v\d+/)?(?:debian|pypi|conda|system)-|envs/py\d|src/vllm-\d"
    + r"|externals/|builds/vllm|downloads/(?:debian|pypi)/|blobs/sha256/|pins/vllm-)"
)
# A workspace's own hidden cache dir (benchmarks/device/elsewhere.sh carries sources in one).
_DOTCACHE = re.compile(_START + rf"((?:/{_SEG})+?)/\.cache/")
_VENV = re.compile(_START + rf"((?:/{_SEG})*?/\.?venv)(?=/|$|[^\w.-])")
# What may remain of a home or temp dir of another machine.
_HOMES = re.compile(_START + rf"(/root|/home/{_SEG})(?=/|$|[^\w.-])")
_TMPS = re.compile(_START + r"(/tmp|/var/tmp)(?=/|$|[^\w.-])")


@dataclass(frozen=True)
class Roots:
    """Absolute roots and the symbol each becomes ("" : relative to the workspace)."""

    pairs: tuple[tuple[str, str], ...]

    @staticmethod
    def here(workspace: Path | None = None) -> Roots:
        """This machine's roots: the workspace (if any), the cache, home and temp dirs."""
        from vllm_matrix.infra.cache import cache_root

        pairs: list[tuple[str, str]] = []
        if workspace is not None:
            pairs.append((str(workspace.resolve()), ""))
        pairs.append((str(cache_root()), CACHE))
        venv = os.environ.get("VIRTUAL_ENV")
        if venv:
            pairs.append((str(Path(venv).resolve()), VENV))
        pairs.append((str(Path.home().resolve()), HOME))
        pairs.append((str(Path(tempfile.gettempdir()).resolve()), TMP))
        # A symlinked root (/tmp -> /private/tmp) is written both ways.
        if workspace is not None and str(workspace.absolute()) != pairs[0][0]:
            pairs.append((str(workspace.absolute()), ""))
        return Roots(tuple(pairs))

    def learn(self, strings: Iterable[str]) -> Roots:
        """These roots plus the ones recognisable in ``strings`` (made elsewhere)."""
        found: dict[str, str] = dict(self.pairs)
        for s in strings:
            if "/" not in s:
                continue
            for pattern, symbol in ((_WORKSPACE, ""), (_CACHE, CACHE), (_VENV, VENV)):
                for m in pattern.finditer(s):
                    found.setdefault(m.group(1), symbol)
            for m in _DOTCACHE.finditer(s):
                # ~/.cache is the home dir's, not a workspace's.
                if not _HOMES.fullmatch(m.group(1)) and m.group(1) not in found:
                    found.setdefault(m.group(1), "")
        return Roots(tuple(found.items()))


def _replacer(roots: Roots) -> re.Pattern[str] | None:
    # Longest first: the cache usually lies in the home dir, a workspace in /tmp.
    keys = sorted((r for r, _ in roots.pairs if r not in ("", "/")), key=len, reverse=True)
    if not keys:
        return None
    alts = "|".join(re.escape(k) for k in keys)
    return re.compile(_START + "(" + alts + r")(?:(/)|(?=$|[^\w.-]))")


def text(s: str, roots: Roots | None = None) -> str:
    """``s`` with every absolute root replaced by its symbol."""
    if "/" not in s:
        return s
    r = (roots or Roots.here()).learn([s])
    return _apply(s, _replacer(r), dict(r.pairs))


def _apply(s: str, pattern: re.Pattern[str] | None, symbols: dict[str, str]) -> str:
    if "/" not in s:
        return s
    if pattern is not None:

        def sub(m: re.Match[str]) -> str:
            symbol, slash = symbols[m.group(1)], m.group(2) or ""
            # The workspace itself ("" ): its files become relative paths.
            return symbol + slash if symbol else ("" if slash else ".")

        s = pattern.sub(sub, s)
    s = _HOMES.sub(HOME, s)
    return _TMPS.sub(TMP, s)


def doc(obj: Any, roots: Roots | None = None) -> Any:
    """A JSON document (dicts, lists, strings) with every string made portable, dict keys
    too (the gpu stage keys its libraries by path); the roots recognised anywhere in it are
    replaced everywhere in it."""
    r = (roots or Roots.here()).learn(strings(obj))
    pattern = _replacer(r)
    symbols = dict(r.pairs)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return _apply(x, pattern, symbols)
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        return x

    return walk(obj)


def strings(obj: Any) -> Iterable[str]:
    """Every string in a JSON document, dict keys included."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from strings(v)


# Absolute paths that name a particular machine: what a report must never contain.
MACHINE_PATH = re.compile(_START + r"/(?:root|home|tmp|work|var/tmp|opt|mnt|scratch)(?=/|$)")


def machine_paths(s: str) -> list[str]:
    """The machine-specific absolute paths left in ``s`` (for tests and checks)."""
    return [s[m.start() : m.start() + 80].split()[0] for m in MACHINE_PATH.finditer(s)]


__all__ = ["CACHE", "TMP", "VENV", "Roots", "doc", "machine_paths", "strings", "text"]
