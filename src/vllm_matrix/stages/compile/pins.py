"""Torch pins: the requirements an existing torch replaces, removed from a tree's
requirement files and pyproject.toml (like vLLM's ``use_existing_torch.py``)."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from vllm_matrix.stages.compile.errors import BuildError

# Requirements an existing torch replaces: vLLM's use_existing_torch.py drops every line
# that mentions torch; only these names are dropped here (it also drops e.g. outlines,
# whose comment says "Requires torch").
EXISTING_TORCH_REPLACES = frozenset({"torch", "torchvision", "torchaudio", "xformers"})


@dataclass(frozen=True)
class PinChange:
    file: str  # relative to the tree
    line: int  # 1-based, in the original file
    removed: str  # the requirement text as it was

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def requirement_name(text: str) -> str | None:
    """The canonical project name a requirement line names (None for comments/options)."""
    stripped = text.strip()
    if not stripped or stripped.startswith(("#", "-")):
        return None
    m = _REQ_NAME.match(stripped)
    return canonicalize_name(m.group(1)) if m else None


def requirement_files(tree: Path) -> list[Path]:
    """``requirements*.txt`` (vLLM < 0.8) and ``requirements/*.txt`` (later), sorted."""
    found = list(tree.glob("requirements*.txt")) + list(tree.glob("requirements/*.txt"))
    return sorted(p for p in found if p.is_file())


def _neutralise_txt(text: str, rel: str, names: frozenset[str]) -> tuple[str, list[PinChange]]:
    kept: list[str] = []
    changes: list[PinChange] = []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if requirement_name(line) in names:
            changes.append(PinChange(rel, n, line.strip()))
        else:
            kept.append(line)
    return "".join(kept), changes


def _array_strings(text: str, open_at: int) -> tuple[int, list[tuple[int, int, str]]]:
    """Scan the TOML array starting at ``text[open_at] == '['``: (index after its closing
    ``]``, [(start, end, value) of each top-level basic/literal string])."""
    depth = 0
    i = open_at
    out: list[tuple[int, int, str]] = []
    while i < len(text):
        c = text[i]
        if c == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
            continue
        if c in "\"'":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if (c == '"' and text[j] == "\\") else 1
            if depth == 1:
                out.append((i, j + 1, text[i + 1 : j]))
            i = j + 1
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i + 1, out
        i += 1
    raise ValueError("unterminated array")


def _drop_strings(text: str, spans: list[tuple[int, int]]) -> str:
    """Remove each string span with its comma; a line left holding nothing but a comment
    or blanks goes entirely."""
    for start, end in sorted(spans, reverse=True):
        stop = end
        while stop < len(text) and text[stop] in " \t":
            stop += 1
        if stop < len(text) and text[stop] == ",":
            stop += 1
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", stop)
        line_end = len(text) if line_end < 0 else line_end
        before, after = text[line_start:start], text[stop:line_end]
        if not before.strip() and (not after.strip() or after.strip().startswith("#")):
            text = text[:line_start] + text[line_end + 1 :]
        else:
            while stop < len(text) and text[stop] in " \t" and text[stop : stop + 1] != "\n":
                stop += 1
            text = text[:start] + text[stop:]
    return text


_TABLE = re.compile(r"^\s*\[([^\[\]]+)\]\s*(?:#.*)?$", re.M)


def _neutralise_pyproject(
    text: str, rel: str, names: frozenset[str]
) -> tuple[str, list[PinChange]]:
    """Drop the named requirements from ``[build-system] requires`` and ``[project]
    dependencies``, keeping every other byte (comments, layout) as it was."""
    data = tomllib.loads(text)
    wanted = {"build-system": "requires", "project": "dependencies"}
    spans: list[tuple[int, int]] = []
    changes: list[PinChange] = []
    tables = list(_TABLE.finditer(text))
    for k, m in enumerate(tables):
        table = m.group(1).strip()
        key = wanted.get(table)
        if key is None or not isinstance(data.get(table, {}).get(key), list):
            continue
        body_end = tables[k + 1].start() if k + 1 < len(tables) else len(text)
        km = re.compile(rf"^\s*{re.escape(key)}\s*=\s*\[", re.M).search(text, m.end(), body_end)
        if km is None:
            continue
        _, strings = _array_strings(text, km.end() - 1)
        for start, end, value in strings:
            if requirement_name(value) in names:
                spans.append((start, end))
                changes.append(PinChange(rel, text.count("\n", 0, start) + 1, value.strip()))
    if not spans:
        return text, []
    new = _drop_strings(text, spans)
    # The edit must leave valid TOML with exactly the named entries gone.
    after = tomllib.loads(new)
    for table, key in wanted.items():
        before_list = data.get(table, {}).get(key)
        if isinstance(before_list, list):
            expect = [r for r in before_list if requirement_name(str(r)) not in names]
            if after.get(table, {}).get(key) != expect:
                raise BuildError(
                    f"{rel}: could not remove the torch pins from [{table}] {key} cleanly",
                    fix="remove them by hand in the work copy, or report the pyproject layout",
                )
    return new, changes


def neutralise_pins(
    tree: Path, names: Iterable[str] = EXISTING_TORCH_REPLACES
) -> tuple[PinChange, ...]:
    """Remove the requirements an existing torch replaces from the tree's requirement
    files and pyproject.toml (in place, each file by rename); return what went.

    Idempotent: a second call finds nothing and changes nothing (mtimes stay).
    """
    wanted = frozenset(canonicalize_name(n) for n in names)
    changes: list[PinChange] = []
    targets: list[tuple[Path, Callable[..., tuple[str, list[PinChange]]]]] = [
        (p, _neutralise_txt) for p in requirement_files(tree)
    ]
    if (tree / "pyproject.toml").is_file():
        targets.append((tree / "pyproject.toml", _neutralise_pyproject))
    for path, fn in targets:
        rel = path.relative_to(tree).as_posix()
        text = path.read_text(encoding="utf-8")
        new, found = fn(text, rel, wanted)
        if found:
            tmp = path.with_name(f".{path.name}.vllm-matrix-new")
            tmp.write_text(new, encoding="utf-8")
            shutil.copymode(path, tmp)
            os.replace(tmp, path)
            changes += found
    return tuple(changes)
