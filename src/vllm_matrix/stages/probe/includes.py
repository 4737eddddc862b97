"""Include closure: the in-tree files a unit reaches, and the externals or generated headers
it needs."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.stages.probe.files import read_text

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"]([^">]+)[">]', re.M)


@functools.lru_cache(maxsize=4096)
def _includes_of(path: Path) -> tuple[str, ...]:
    return tuple(_INCLUDE.findall(read_text(path)))


def include_closure(
    tree: Path, src: str, search: Sequence[Path], know: ProbeKnowledge
) -> tuple[tuple[str, ...], dict[str, str]]:
    """In-tree files ``src`` includes (transitively) and the externals it needs.

    Returns (in-tree files, {external name: first include that needs it}). Includes are
    resolved like the compiler does for quoted includes: the includer's directory first,
    then the target's include directories. Conditional includes count (#ifdef is not
    evaluated): a unit may be reported as needing CUTLASS on a path it does not take.
    """
    seen: dict[Path, None] = {}
    needs: dict[str, str] = {}
    todo = [tree / src]
    root = tree.resolve()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen[f] = None
        for inc in _includes_of(f):
            hit = next(
                (d / inc for d in (f.parent, *search) if (d / inc).is_file()),
                None,
            )
            if hit is not None:
                hit = Path(os.path.normpath(hit))
                if hit.resolve().is_relative_to(root):
                    todo.append(hit)
                    continue
            # outside the tree (a provided dependency) or nowhere: whose is it?
            ext = next(
                (e for e in know.externals if any(inc.startswith(p) for p in e.include_prefixes)),
                None,
            )
            if ext is not None:
                needs.setdefault(ext.name, f"{_rel(f, tree)}: #include <{inc}>")
            elif hit is None and "/" not in inc and (gen := generator_of(root, inc)) is not None:
                needs.setdefault(
                    GENERATED, f"{_rel(f, tree)}: #include {inc}, written by {gen} at build time"
                )
    files = tuple(sorted(_rel(f, tree) for f in seen))
    return files, needs


# include_closure's name for "a file the build generates" (vLLM 0.20's marlin
# kernel_selector.h, written by csrc/quantization/marlin/generate_kernels.py from CMake).
GENERATED = "generated"


@functools.lru_cache(maxsize=8)
def _generator_texts(tree: Path) -> tuple[tuple[str, str], ...]:
    """The tree's code generators (csrc/**/*.py), with their text."""
    return tuple((_rel(p, tree), read_text(p)) for p in tree.glob("csrc/**/*.py") if p.is_file())


def generator_of(tree: Path, name: str) -> str | None:
    """The generator script or CMake file of ``tree`` that names ``name`` (a header a unit
    includes that the tree does not hold), if any."""
    if not re.fullmatch(r"[\w.-]+\.(?:h|hpp|cuh|inc)", name):
        return None
    # Code generators only: a CMake file naming a header (deepgemm.cmake names torch's
    # shim.h) is no evidence that the build writes it.
    found = [rel for rel, text in _generator_texts(tree) if name in text]
    return found[0] if found else None


def _rel(path: Path, tree: Path) -> str:
    with contextlib.suppress(ValueError):
        return path.relative_to(tree).as_posix()
    return path.as_posix()
