"""Find torch C++ API symbols in a vLLM tree that the cell's torch is too old for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.knowledge.toolchains import ApiSymbol

SUFFIXES = {".cu", ".cuh", ".cpp", ".cc", ".h", ".hpp", ".inl"}
MAX_HITS_PER_SYMBOL = 10


@dataclass(frozen=True)
class ApiHit:
    symbol: ApiSymbol
    file: str  # relative to the tree
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def scan(tree: Path, symbols: tuple[ApiSymbol, ...]) -> list[ApiHit]:
    """Every use (first MAX_HITS_PER_SYMBOL per symbol) in csrc/, in path order."""
    if not symbols:
        return []
    pats = [(s, re.compile(s.pattern)) for s in symbols]
    quick = re.compile("|".join(f"(?:{s.pattern})" for s in symbols))
    hits: list[ApiHit] = []
    counts: dict[str, int] = {}
    root = tree / "csrc"
    if not root.is_dir():
        return []
    for path in sorted(root.rglob("*")):
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if not quick.search(text):
            continue
        for no, line in enumerate(text.splitlines(), 1):
            for sym, pat in pats:
                if counts.get(sym.name, 0) < MAX_HITS_PER_SYMBOL and pat.search(line):
                    counts[sym.name] = counts.get(sym.name, 0) + 1
                    hits.append(ApiHit(sym, str(path.relative_to(tree)), no, line.strip()))
    return hits
