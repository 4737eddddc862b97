"""Arch-gated kernel families in a vLLM CMakeLists.txt.

vLLM builds some kernels only for certain arches *and* only with a new enough nvcc:
    cuda_archs_loose_intersection(SCALED_MM_ARCHS "12.0;12.0a" "${CUDA_ARCHS}")
    if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND SCALED_MM_ARCHS)
      set(SRCS "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm120.cu" ...)
Each such pair is a Gate: which arches, which nvcc, which sources, where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_INTERSECT = re.compile(
    r'cuda_archs_loose_intersection\(\s*(\w+)\s+"([^"]*)"\s+"\$\{CUDA_ARCHS\}"\s*\)'
)
_IF = re.compile(
    r"if\s*\(\s*\$\{CMAKE_CUDA_COMPILER_VERSION\}\s+VERSION_(GREATER_EQUAL|GREATER)\s+"
    r"([\d.]+)\s+AND\s+(\w+)\s*\)"
)
_SRC = re.compile(r'"(csrc/[^"]+\.cu)"')
LOOKAHEAD = 6  # lines between the intersection and its if()


@dataclass(frozen=True)
class Gate:
    var: str
    archs: tuple[str, ...]
    op: str  # ">=" | ">"
    nvcc: str
    sources: tuple[str, ...]
    line: int

    def needs(self) -> str:
        """The gate as a reader takes it: CMake's ``VERSION_GREATER 12.8`` compares the
        full compiler version (12.8.61 for CUDA 12.8), so every 12.8.x nvcc passes it --
        "nvcc ≥ 12.8", as vLLM's own comment above the gate says ("CUDA 12.8 or later")."""
        if self.op == ">":
            return (
                f"nvcc ≥ {self.nvcc} (CMake `VERSION_GREATER {self.nvcc}` holds for nvcc "
                f"{self.nvcc}.x, which reports {self.nvcc}.<build>)"
            )
        return f"nvcc ≥ {self.nvcc}"

    def built_with(self, nvcc: str) -> bool:
        # Compared on major.minor: "VERSION_GREATER 12.8" holds for every real 12.8.x nvcc
        # (CMake compares 12.8.61 > 12.8), so ">" and ">=" agree for released toolkits.
        have = tuple(int(x) for x in nvcc.split(".")[:2])
        return have >= tuple(int(x) for x in self.nvcc.split(".")[:2])

    @property
    def where(self) -> str:
        return f"CMakeLists.txt:{self.line}"


def gates(tree: Path) -> tuple[Gate, ...]:
    cm = tree / "CMakeLists.txt"
    if not cm.is_file():
        return ()
    lines = cm.read_text(errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        m = _INTERSECT.search(line)
        if not m:
            continue
        var, archs = m.group(1), tuple(a for a in m.group(2).split(";") if a)
        for j in range(i + 1, min(i + 1 + LOOKAHEAD, len(lines))):
            g = _IF.search(lines[j])
            if g and g.group(3) == var:
                srcs = []
                for k in range(j + 1, min(j + 12, len(lines))):
                    srcs += _SRC.findall(lines[k])
                    if ")" in lines[k] and srcs:
                        break
                op = ">=" if g.group(1) == "GREATER_EQUAL" else ">"
                out.append(Gate(var, archs, op, g.group(2), tuple(srcs), i + 1))
                break
    return tuple(out)


def for_arch(all_gates: tuple[Gate, ...], arch: str) -> tuple[Gate, ...]:
    """Gates whose arch list names ``arch`` (with or without an a/f suffix)."""
    base = arch.rstrip("af")
    return tuple(g for g in all_gates if any(a.rstrip("af") == base for a in g.archs))
