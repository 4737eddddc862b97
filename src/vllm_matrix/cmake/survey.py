"""What a tree's CMake declares for CUDA across every nvcc: the evaluator run once per nvcc
interval its conditions tell apart.

A CMakeLists.txt branches on the nvcc version (``CUDA_SUPPORTED_ARCHS`` per nvcc, kernels
gated on "nvcc ≥ 12.8"). The evaluator (``evaluate.CMake``) takes one branch per run, so the
survey runs it at a version below every threshold, then at each threshold its conditions
compared with and just above it (``12.8`` and ``12.8.1``: ``VERSION_GREATER 12.8`` tells
them apart), until no run names a new one. Between two thresholds every comparison answers
alike, so these runs see every branch an nvcc can take. Each run follows the external
projects (cmake/external_projects/*.cmake) the probe skips, with no environment (the
downloads); where a download first appears the run is repeated with every ``*_SRC_DIR``
variable set to a value that names it (which variable replaces which download). Facts
(stages/facts.py) and the kernel gates (stages/preflight/gates.py) read their answers from here, the
probe its families from the same evaluator: one reader of vLLM's CMake.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.cmake.evaluate import CMake
from vllm_matrix.cmake.model import Assignment, Fetch, Gate
from vllm_matrix.cmake.values import version_cmp

FLOOR = "1.0"  # below every nvcc a condition names
_MAX_RUNS = 64
# every arch any vLLM release lists, so each arch-gated branch is reached
_GENCODE = " ".join(
    f"-gencode arch=compute_{n},code=sm_{n}"
    for n in (70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 107, 110, 120, 121)
)
_ENV_MARK = "/vllm-matrix-env/"
_MARKED = re.compile(re.escape(_ENV_MARK) + r"([A-Za-z0-9_]+)")


class _SrcDirEnv(Mapping[str, str]):
    """An environment where every ``*_SRC_DIR`` is set, to a path naming the variable."""

    def __getitem__(self, key: str) -> str:
        if key.endswith("_SRC_DIR"):
            return _ENV_MARK + key
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Survey:
    samples: tuple[str, ...]  # the nvcc versions run, ascending (FLOOR first)
    assignments: tuple[tuple[str, Assignment], ...]  # (lowest nvcc, set()) in run order
    gates: tuple[Gate, ...]  # in CMakeLists.txt, by line
    fetches: tuple[Fetch, ...]  # first of each (name, file) with a download
    overrides: dict[str, str]  # external name -> the env variable that replaces its download
    minimum: tuple[str, str] | None  # cmake_minimum_required VERSION, file:line

    def first(self, var: str, file: str = "CMakeLists.txt") -> Assignment | None:
        """The first set() of ``var`` in ``file`` any run executed."""
        hits = [a for _, a in self.assignments if a.var == var and a.file == file]
        return min(hits, key=lambda a: a.line) if hits else None

    def branches(self, var: str, file: str = "CMakeLists.txt") -> list[tuple[Assignment, str]]:
        """Each set() of ``var`` in ``file`` with the lowest nvcc that reaches it (FLOOR:
        any nvcc), in file order."""
        lowest: dict[str, tuple[Assignment, str]] = {}
        for nvcc, a in self.assignments:
            if a.var == var and a.file == file and a.where not in lowest:
                lowest[a.where] = (a, nvcc)  # samples run in ascending order
        return sorted(lowest.values(), key=lambda an: an[0].line)


def _presets(tree: Path, nvcc: str) -> dict[str, str]:
    src = str(tree)
    return {
        "CMAKE_SOURCE_DIR": src,
        "CMAKE_CURRENT_SOURCE_DIR": src,
        "PROJECT_SOURCE_DIR": src,
        "CMAKE_CURRENT_LIST_DIR": src,
        "CMAKE_BINARY_DIR": str(tree / "build"),
        "CMAKE_CURRENT_BINARY_DIR": str(tree / "build"),
        "CMAKE_BUILD_TYPE": "RelWithDebInfo",
        "CMAKE_SYSTEM_NAME": "Linux",
        "CMAKE_SYSTEM_PROCESSOR": "x86_64",
        "UNIX": "1",
        "LINUX": "1",
        # the CUDA build, as a tree's own CMake would set it (for trees that do not)
        "VLLM_TARGET_DEVICE": "cuda",
        "VLLM_GPU_LANG": "CUDA",
        "CUDA_FOUND": "TRUE",
        "CUDA_VERSION": ".".join(nvcc.split(".")[:2]),
        "CUDAToolkit_VERSION": nvcc,
        "CMAKE_CUDA_COMPILER_VERSION": nvcc,
        "CMAKE_CUDA_COMPILER_ID": "NVIDIA",
        "CMAKE_CUDA_FLAGS": _GENCODE,
        "Torch_FOUND": "TRUE",
        "TORCH_FOUND": "TRUE",
        "Python_FOUND": "TRUE",
        "VLLM_PYTHON_EXECUTABLE": "python3",
        "Python_EXECUTABLE": "python3",
    }


def _run(tree: Path, nvcc: str, env: Mapping[str, str]) -> CMake:
    cm = CMake(tree, _presets(tree, nvcc), env, lambda _expr: "", {}, {})
    cm.follow_external_projects = True
    cm.run_file(tree / "CMakeLists.txt")
    return cm


def _above(version: str) -> str:
    return version + ".1"


def survey(tree: Path) -> Survey:
    """What ``tree``'s CMakeLists.txt declares for CUDA across every nvcc (cached per file
    state: a tree is read once however many readers ask)."""
    cm = tree / "CMakeLists.txt"
    return _survey(tree.resolve(), cm.stat().st_mtime_ns)


@functools.lru_cache(maxsize=128)  # every release of a currency pass (76); 34 KB for 0.34.0
def _survey(tree: Path, _stamp: int) -> Survey:
    runs: dict[str, CMake] = {}
    todo = [FLOOR]
    while todo and len(runs) < _MAX_RUNS:
        nvcc = todo.pop()
        if nvcc in runs:
            continue
        runs[nvcc] = cm = _run(tree, nvcc, {})
        for op, t in sorted(cm.nvcc_thresholds):
            if re.fullmatch(r"\d+(\.\d+)*", t):
                # GREATER_EQUAL and LESS answer alike for t and just above it
                tell = op in ("VERSION_GREATER_EQUAL", "VERSION_LESS")
                todo += [v for v in ((t,) if tell else (t, _above(t))) if v not in runs]
    order = sorted(runs, key=functools.cmp_to_key(version_cmp))
    # each set() once, with the lowest nvcc that ran it (a function's set() once per variable)
    lowest: dict[tuple[str, str], tuple[str, Assignment]] = {}
    for v in order:
        for a in runs[v].assignments:
            lowest.setdefault((a.where, a.var), (v, a))
    assignments = tuple(lowest.values())
    gates: dict[tuple[str, tuple[str, ...], str, int], Gate] = {}
    fetches: dict[tuple[str, str], Fetch] = {}
    for v in order:
        for file, g in runs[v].gates:
            if file == "CMakeLists.txt":
                gates.setdefault((g.var, g.archs, g.where, g.line), g)
        for f in runs[v].fetches:
            if {"GIT_TAG", "URL"} & set(f.values):
                fetches.setdefault((f.name, f.file), f)
    overrides: dict[str, str] = {}
    seen: set[str] = set()
    for v in order:
        names = {f.name for f in runs[v].fetches} - seen
        if not names:
            continue  # the override of a download is read where the download first is
        seen |= names
        marked = _run(tree, v, _SrcDirEnv())
        for f in marked.fetches:
            m = _MARKED.search(f.values.get("SOURCE_DIR", ""))
            if m:
                overrides.setdefault(f.name, m.group(1))
        for a in marked.assignments:
            m = _MARKED.search(";".join(a.values))
            if m and a.var.endswith("_SOURCE_DIR"):
                overrides.setdefault(a.var.removesuffix("_SOURCE_DIR"), m.group(1))
    return Survey(
        samples=tuple(order),
        assignments=assignments,
        gates=tuple(sorted(gates.values(), key=lambda g: g.line)),
        fetches=tuple(fetches.values()),
        overrides=overrides,
        minimum=runs[FLOOR].minimum,
    )
