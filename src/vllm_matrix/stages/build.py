"""The build stage: a vLLM wheel built against the cell's existing torch.

What vLLM's docs describe for "build with an existing PyTorch installation", done so a
machine can run it unattended and a stopped run resumes:

1. A work copy of the (read-only, cached) source tree in ``<work>/src``, made once:
   copied under a temporary name, patched (the series entries for this version),
   torch pins removed like vLLM's ``use_existing_torch.py``, marked, then renamed into
   place. It is kept between runs: vLLM's setup.py configures CMake and runs ninja in
   ``build/temp.*`` inside the tree (pip >= 21.3 builds a local directory in place), so
   a rerun after Ctrl-C or kill -9 lets ninja skip every finished object.
2. ``<env python> -m pip wheel -v --no-build-isolation --no-deps <work>/src`` with the
   fixups' environment, MAX_JOBS / NVCC_THREADS sized from cores and MemAvailable, and
   ccache (a CCACHE_DIR shared under the cache) when ``ccache`` is on the env's PATH.
   ninja's ``[n/N]`` lines become progress messages (at most one every few seconds);
   the full output goes to the log.
3. The wheel gets one local version label naming CUDA and torch (``0.4.2+cu124torch2.3``;
   a label vLLM put there itself, like ``+cu124``, is replaced) and is written into
   ``dist/`` by rename: dist/ never holds half a wheel.

``audit_wheel`` and ``smoke`` (module ``audit``) check the result.

Measured on the canary (vLLM 0.4.2, 2 shared cores): ninja starts each compile in a
process group of its own, so ``kill -9`` of the build's process group leaves the
running nvcc/cicc jobs behind as orphans; they are not in .ninja_log, so the next run
compiles those units again; it first ends whatever still runs inside the work copy
(``proc.working_in``), so no orphan writes into the build dir beside ninja. ``cmake --build``
relays ninja's output in bursts when it is not a terminal: the ``[n/N]`` lines (and so
the progress messages) can lag; .ninja_log, which the "all targets" count reads, does not.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import resource
import shutil
import socket
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import config, proc
from vllm_matrix.infra.cache import cache_root, locked
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import FAIL, PASS, WARN, Finding, StageResult
from vllm_matrix.stages import partial
from vllm_matrix.stages import patches as patches_mod
from vllm_matrix.stages.audit import audit_wheel, smoke
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.fixups import Fixups
from vllm_matrix.stages.source import SourceTree
from vllm_matrix.stages.toolkit import Toolkit

__all__ = [
    "JobPlan",
    "NinjaProgress",
    "PinChange",
    "audit_wheel",
    "build_wheel",
    "local_label",
    "neutralise_pins",
    "parse_targets",
    "partial_label",
    "pip_wheel_argv",
    "plan_jobs",
    "prepare_work_copy",
    "relabel_wheel",
    "smoke",
    "work_dir",
]

# Requirements an existing torch replaces: vLLM's use_existing_torch.py drops every line
# that mentions torch; only these names are dropped here (it also drops e.g. outlines,
# whose comment says "Requires torch").
EXISTING_TORCH_REPLACES = frozenset({"torch", "torchvision", "torchaudio", "xformers"})
# nvcc needs 3-5 GB per job (vllm #3180, #15452); measured: 3.0 GB peak for vLLM 0.4.2
# sm_80 units. The middle of the range leaves room for the heavier units of later releases.
PER_JOB_GIB = 4.0
PROGRESS_INTERVAL = 5.0
WORK_MARKER = ".vllm-matrix-work.json"
# Bump when the work copy's preparation changes: older work copies are then remade.
WORK_FORMAT = 1
CCACHE_MAXSIZE = "20G"
# ccache counters worth reporting (``ccache --print-stats``, ccache >= 4.4).
CCACHE_KEYS = (
    "direct_cache_hit",
    "preprocessed_cache_hit",
    "cache_miss",
    # with a remote storage (ccache >= 4.8 names): hits another machine's compile made
    "local_storage_hit",
    "remote_storage_hit",
    "remote_storage_miss",
    "remote_storage_error",
    "remote_storage_timeout",
    "unsupported_compiler_option",
    "unsupported_source_language",
    "compile_failed",
)


class BuildError(MatrixError):
    """The build stage could not be set up (the compile itself failing is a FAIL result)."""


def work_dir(cell: Cell, root: Path | None = None) -> Path:
    """Where a cell's resumable build lives by default: ``<cache>/builds/<cell id>``."""
    return (root or cache_root()) / "builds" / cell.id


# ------------------------------------------------------------------ torch pins


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


# ------------------------------------------------------------------ the work copy


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _work_key(tree: SourceTree, chosen: Sequence[patches_mod.Patch]) -> dict[str, Any]:
    return {
        "format": WORK_FORMAT,
        "origin": tree.origin,
        "root": str(tree.root),
        "patches": [[p.name, _digest(p.file)] for p in chosen],
        "removed": sorted(EXISTING_TORCH_REPLACES),
    }


@dataclass(frozen=True)
class WorkCopy:
    root: Path
    reused: bool  # an earlier run's copy (and its build dir) was kept
    applied: tuple[dict[str, Any], ...]
    pins: tuple[PinChange, ...]
    remade_because: str | None = None


def prepare_work_copy(
    tree: SourceTree,
    dst: Path,
    chosen: Sequence[patches_mod.Patch],
    log: Path | None = None,
    *,
    clean: bool = False,
) -> WorkCopy:
    """The patched, pin-neutralised work copy at ``dst``: reused when an earlier run made
    it from the same source and patches (so its build dir resumes), else made afresh.

    A copy is complete only once renamed to ``dst`` with its marker inside; a leftover
    ``<dst>.partial`` from a killed run is discarded. The caller holds ``locked(dst)``.
    """
    key = _work_key(tree, chosen)
    marker = dst / WORK_MARKER
    why: str | None = None
    if dst.exists():
        old: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(marker.read_text())
        if clean:
            why = "a clean build was asked for"
        elif not old:
            why = "the old work copy has no marker (made by a run that was stopped)"
        elif old.get("key") != key:
            why = "the source or the patch series changed"
        if why is None:
            # Re-applying is idempotent (already-applied) and proves the copy still holds
            # the patches; unchanged files keep their mtimes, so nothing recompiles.
            applied = patches_mod.apply_all(dst, tuple(chosen), log, version=tree.version)
            again = neutralise_pins(dst)
            pins = tuple(PinChange(**c) for c in old.get("pins", ())) + again
            return WorkCopy(dst, True, tuple(a.to_json() for a in applied), pins)
        shutil.rmtree(dst)
    staging = dst.with_name(dst.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        patches_mod.copy_tree(tree.root, staging)
        applied = patches_mod.apply_all(staging, tuple(chosen), log, version=tree.version)
        pins = neutralise_pins(staging)
        record = {
            "key": key,
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "applied": [a.to_json() for a in applied],
            "pins": [c.to_json() for c in pins],
        }
        (staging / WORK_MARKER).write_text(json.dumps(record, indent=1) + "\n")
        os.replace(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WorkCopy(dst, False, tuple(a.to_json() for a in applied), pins, why)


# ------------------------------------------------------------------ job sizing


def mem_available_gib(meminfo_text: str) -> float | None:
    for line in meminfo_text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class JobPlan:
    jobs: int  # units compiled at once (ninja -j)
    nvcc_threads: int
    cores: int
    mem_available_gib: float | None
    per_job_gib: float
    reason: str
    low_memory: bool = False

    @property
    def max_jobs_env(self) -> int:
        # vLLM's setup.py (0.4 ... 0.33) runs ninja with MAX_JOBS // NVCC_THREADS jobs.
        return self.jobs * self.nvcc_threads

    def env(self) -> dict[str, str]:
        return {"MAX_JOBS": str(self.max_jobs_env), "NVCC_THREADS": str(self.nvcc_threads)}

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"max_jobs_env": self.max_jobs_env}


def plan_jobs(
    cores: int,
    mem_gib: float | None,
    n_archs: int,
    *,
    jobs: int | None = None,
    nvcc_threads: int | None = None,
    per_job_gib: float = PER_JOB_GIB,
) -> JobPlan:
    """How many units to compile at once and how many nvcc threads each gets.

    nvcc threads split one unit's gencode targets, so with one arch a second thread has
    nothing to do; with several arches it helps where cores outnumber units (the long
    tail of a build), at the price of that much more memory per job. Jobs are then
    bounded by cores / threads and by MemAvailable / (per_job_gib * threads).
    """
    why: list[str] = []
    if nvcc_threads is not None:
        threads = max(1, nvcc_threads)
        why.append(f"NVCC_THREADS={threads} as asked")
    elif n_archs <= 1:
        threads = 1
        why.append("NVCC_THREADS=1: one arch, a second nvcc thread would have nothing to do")
    else:
        threads = max(1, min(n_archs, cores // 4))
        why.append(
            f"NVCC_THREADS={threads}: {n_archs} arches, one thread per 4 cores "
            "(threads help only where cores outnumber units)"
        )
    by_cpu = max(1, cores // threads)
    by_mem = None if mem_gib is None else int(mem_gib // (per_job_gib * threads))
    low = by_mem is not None and by_mem < 1
    if jobs is not None:
        n = max(1, jobs)
        why.append(f"jobs={n} as asked")
        if by_mem is not None and n > by_mem:
            why.append(
                f"warning: MemAvailable {mem_gib:.1f} GiB fits {by_mem} at "
                f"{per_job_gib:g} GiB per nvcc job"
            )
    else:
        n = by_cpu if by_mem is None else max(1, min(by_cpu, by_mem))
        mem_txt = "MemAvailable unknown" if mem_gib is None else f"MemAvailable {mem_gib:.1f} GiB"
        why.append(
            f"jobs={n}: {cores} cores / {threads} thread(s) = {by_cpu}; {mem_txt} / "
            f"({per_job_gib:g} GiB per nvcc job x {threads}) = "
            f"{'?' if by_mem is None else by_mem}"
        )
    if threads > 1:
        why.append(f"MAX_JOBS={n * threads}: vLLM's setup.py divides MAX_JOBS by NVCC_THREADS")
    return JobPlan(n, threads, cores, mem_gib, per_job_gib, "; ".join(why), low)


# ------------------------------------------------------------------ progress

_NINJA_LINE = re.compile(r"^\s*\[(\d+)/(\d+)\]\s*(.*?)\s*$")
_CMAKE_TARGET = re.compile(r"CMakeFiles/([^/\s]+)\.dir/")
_LINKED = re.compile(r"Linking \w+ [\w ]+? (?:\S*/)?([^/\s.]+)[^/\s]*\.(?:so|a)\b")


def fmt_seconds(s: float) -> str:
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class NinjaRun:
    """One ninja invocation (setup.py runs one per extension target)."""

    total: int
    done: int
    started: float  # when the run began (the last non-ninja line before its first step)
    last: float
    target: str | None = None
    first_done: int = 0  # the first [n/N] seen (1 unless lines were missed)

    def eta(self, jobs: int = 1) -> float | None:
        """Seconds left at the rate so far. With ``jobs`` units compiling at once, the
        other jobs - 1 are on average half done when one finishes: counting that keeps
        the first estimates from being ``jobs`` times too long."""
        steps = self.done - self.first_done + 1
        if steps <= 0 or self.done >= self.total:
            return None if self.done < self.total else 0.0
        left = self.total - self.done
        half_done = 0.5 * min(max(0, jobs - 1), left)
        rate = (self.last - self.started) / (steps + half_done)
        return rate * (left - half_done)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "steps": self.total,
            "done": self.done,
            "seconds": round(self.last - self.started, 1),
        }


@dataclass
class NinjaProgress:
    """Turns ninja's ``[n/N]`` lines (the default status, printed as each edge finishes
    when the output is not a terminal) into percent + ETA messages, at most one every
    ``interval`` seconds (a run's first and last step always)."""

    emit: Callable[[str], None] | None = None
    interval: float = PROGRESS_INTERVAL
    overall: Callable[[], tuple[int, int] | None] | None = None
    jobs: int = 1
    clock: Callable[[], float] = time.monotonic
    runs: list[NinjaRun] = field(default_factory=list)
    no_work: int = 0  # ninja runs that had nothing to do ("ninja: no work to do.")
    _last_other: float | None = None
    _last_emit: float | None = None

    def feed(self, line: str) -> str | None:
        now = self.clock()
        m = _NINJA_LINE.match(line)
        if not m:
            if "ninja: no work to do" in line:
                self.no_work += 1
            self._last_other = now
            return None
        n, total, what = int(m.group(1)), int(m.group(2)), m.group(3)
        run = self.runs[-1] if self.runs else None
        new_run = run is None or n < run.done or (run.done >= run.total and n <= run.done)
        if run is None or new_run:
            start = self._last_other if self._last_other is not None else now
            run = NinjaRun(total, n, start, now, None, n)
            self.runs.append(run)
        run.done, run.total, run.last = n, total, now
        if run.target is None:
            t = _CMAKE_TARGET.search(what) or _LINKED.search(what)
            run.target = t.group(1) if t else None
        due = (
            new_run
            or n >= total
            or self._last_emit is None
            or now - self._last_emit >= self.interval
        )
        if not due:
            return None
        self._last_emit = now
        msg = self.message(run)
        if self.emit is not None:
            self.emit(msg)
        return msg

    def on_line(self, line: str) -> None:
        self.feed(line)

    def message(self, run: NinjaRun) -> str:
        pct = 100 * run.done // max(1, run.total)
        eta = run.eta(self.jobs)
        name = run.target or f"ninja run {len(self.runs)}"
        tail = "" if eta is None else (", done" if eta == 0 else f", ETA {fmt_seconds(eta)}")
        whole = self.overall() if self.overall is not None else None
        if whole is not None:
            done, total = min(whole[0], whole[1]), whole[1]
            tail += f"; all targets {done}/{total} ({100 * done // max(1, total)}%)"
        return (
            f"build {name}: {run.done}/{run.total} ({pct}%), "
            f"{fmt_seconds(run.last - run.started)} in{tail}"
        )

    @property
    def steps_run(self) -> int:
        return sum(r.done for r in self.runs)


# Compile and link edges of a CMake-generated build.ninja (phony and utility edges such as
# edit_cache or install never run in a build).
_WORK_RULE = re.compile(r"_COMPILER__|_LINKER__")
_UNESCAPED_SPACE = re.compile(r"(?<!\$) +")
_UNESCAPED_COLON = re.compile(r"(?<!\$):(?:\s|$)")
# What vLLM's setup.py builds: vLLM's CMakeLists has a ``default`` target depending on
# exactly the extensions setup.py asks for (e.g. not _punica_C unless enabled); ``all``
# holds every target defined.
ROOT_TARGETS = ("default", "all")


def _unescape(path: str) -> str:
    return path.replace("$ ", " ").replace("$:", ":").replace("$$", "$")


def parse_ninja_edges(text: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """output -> (rule, the edge's first output, inputs incl. implicit and order-only)."""
    text = re.sub(r"(?<!\$)\$\n[ \t]*", "", text)  # line continuations
    edges: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        if not line.startswith("build "):
            continue
        m = _UNESCAPED_COLON.search(line, 6)
        if m is None:
            continue
        outs = [
            _unescape(o) for o in _UNESCAPED_SPACE.split(line[6 : m.start()].strip()) if o != "|"
        ]
        rest = [t for t in _UNESCAPED_SPACE.split(line[m.end() :].strip()) if t]
        if not outs or not rest:
            continue
        ins = tuple(_unescape(t) for t in rest[1:] if t not in ("|", "||", "|@"))
        for o in outs:
            edges[o] = (rest[0], outs[0], ins)
    return edges


def ninja_work_outputs(build_ninja: Path, targets: Sequence[str] = ()) -> set[str]:
    """The first output of each compile and link edge the build's root target needs
    (what a from-scratch build runs), as ninja writes it into .ninja_log. ``targets``:
    the CMake targets of a partial build instead of the root target."""
    edges = parse_ninja_edges(build_ninja.read_text(errors="replace"))
    return _work_from(edges, _roots(edges, targets))


def _roots(
    edges: Mapping[str, tuple[str, str, tuple[str, ...]]], targets: Sequence[str]
) -> list[str]:
    if targets:
        return list(targets)
    return next(([r] for r in ROOT_TARGETS if r in edges), list(edges))


def _work_from(
    edges: Mapping[str, tuple[str, str, tuple[str, ...]]], roots: Sequence[str]
) -> set[str]:
    seen: set[str] = set()
    work: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        edge = edges.get(node)
        if edge is None or edge[1] in seen:
            continue
        seen.add(edge[1])
        rule, first, ins = edge
        if _WORK_RULE.search(rule):
            work.add(first)
        stack.extend(ins)
    return work


def ninja_work_edges(build_ninja: Path, targets: Sequence[str] = ()) -> int:
    return len(ninja_work_outputs(build_ninja, targets))


def _build_dirs(src: Path) -> list[Path]:
    return sorted(p for p in (src / "build").glob("temp.*") if (p / "build.ninja").is_file())


def ninja_logged(build_dir: Path) -> set[str]:
    """Outputs ninja has recorded as built in ``build_dir`` (.ninja_log, unique)."""
    log = build_dir / ".ninja_log"
    if not log.is_file():
        return set()
    seen = set()
    for line in log.read_text(errors="replace").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 4:
            seen.add(parts[3])
    return seen


def _ninja_logged(src: Path) -> int:
    return sum(len(ninja_logged(d)) for d in _build_dirs(src))


class OverallProgress:
    """(work edges built, work edges) over all targets, from build.ninja and .ninja_log:
    counts what earlier, interrupted runs built too.

    ninja prints an edge's ``[n/N]`` before it appends the edge to .ninja_log, so a count
    read right after a status line can be behind by the edges just finished: while the
    build runs the count is a lower bound (kept from going backwards); the build's last
    message is read after ninja has exited, when the log is complete.
    """

    def __init__(self, src: Path, targets: Sequence[str] = ()) -> None:
        self.src = src
        self.targets = tuple(targets)
        self._outputs: dict[Path, tuple[float, set[str]]] = {}
        self._done = 0

    def __call__(self) -> tuple[int, int] | None:
        done = total = 0
        for d in _build_dirs(self.src):
            manifest = d / "build.ninja"
            try:
                mtime = manifest.stat().st_mtime
                cached = self._outputs.get(d)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, ninja_work_outputs(manifest, self.targets))
                    self._outputs[d] = cached
                outs = cached[1]
                total += len(outs)
                done += len(outs & ninja_logged(d))
            except OSError:
                continue
        if not total:
            return None
        self._done = min(max(done, self._done), total)
        return self._done, total


def progress_of(work: Path, targets: Sequence[str] = ()) -> dict[str, Any] | None:
    """How far a (stopped) build in ``work`` got, from build.ninja and .ninja_log: work
    edges done of all, the compile seconds they took (each edge's own time, summed), and
    the projected total at that rate (units differ a lot: a rough guide)."""
    src = work / "src"
    whole = OverallProgress(src, targets)()
    if whole is None:
        return None
    done, total = whole
    spent = 0.0
    for d in _build_dirs(src):
        outs = ninja_work_outputs(d / "build.ninja", targets)
        last: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for line in (d / ".ninja_log").read_text(errors="replace").splitlines()[1:]:
                parts = line.split("\t")
                if len(parts) >= 4 and parts[3] in outs:
                    last[parts[3]] = (int(parts[1]) - int(parts[0])) / 1000
        spent += sum(last.values())
    out: dict[str, Any] = {"edges_done": done, "edges": total, "edge_seconds_done": round(spent)}
    if done >= min(10, total):  # from fewer edges a projection says nothing
        out["edge_seconds_projected"] = round(spent / done * total)
    figures = {k: v for d in _build_dirs(src) for k, v in target_figures(d).items()}
    if figures:
        out["targets"] = figures
    if targets:
        out["partial"] = list(targets)
    return out


# ------------------------------------------------------------------ partial builds

# Runs in the env's python inside the work copy: vLLM's own setup.py (its CMake arguments,
# its jobs, its install step), with ext_modules cut to the asked CMake targets, run as
# ``setup.py build_ext --build-lib OUT``: the extensions land in OUT/vllm/, no wheel is made.
# setup.py names a target by its extension's name less "vllm." and "vllm_flash_attn."
# (0.4 ... 0.20: ``target_name``).
PARTIAL_DRIVER = r"""
import os, runpy, sys
import setuptools
wanted = [t for t in sys.argv[1].split(",") if t]
out = sys.argv[2]
keep = [t for t in sys.argv[3].split(",") if t]
real = setuptools.setup
def name(ext):
    return ext.name.removeprefix("vllm.").removeprefix("vllm_flash_attn.")
def setup(**kw):
    exts = list(kw.get("ext_modules") or [])
    have = [name(e) for e in exts]
    missing = [t for t in wanted if t not in have]
    if missing:
        print("vllm-matrix: no such extension target: " + ", ".join(missing)
              + "; this tree builds: " + ", ".join(have), flush=True)
        sys.exit(3)
    kept = [t for t in keep if t in have and t not in wanted]
    kw["ext_modules"] = [e for e in exts if name(e) in wanted or name(e) in kept]
    print("vllm-matrix: partial build of " + ", ".join(wanted) + " (of " + ", ".join(have)
          + ")" + (", keeping " + ", ".join(kept) if kept else ""), flush=True)
    return real(**kw)
setuptools.setup = setup
sys.argv = ["setup.py", "build_ext", "--build-lib", out]
sys.path.insert(0, os.getcwd())
runpy.run_path("setup.py", run_name="__main__")
"""
PARTIAL_DIR = "partial"  # under the work dir: OUT of the driver
_TARGET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def parse_targets(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"_C,_C_stable_libtorch"`` -> ("_C", "_C_stable_libtorch"); empty: all (a wheel)."""
    items = text.split(",") if isinstance(text, str) else list(text or ())
    out: list[str] = []
    for raw in items:
        t = raw.strip()
        if not t:
            continue
        if not _TARGET_NAME.match(t):
            raise BuildError(
                f"not a CMake target name: {t!r}",
                fix="name extension targets as vLLM's CMake does, e.g. --targets _C,_moe_C",
            )
        if t not in out:
            out.append(t)
    return tuple(out)


def partial_label(targets: Sequence[str]) -> str:
    """What every result of a partial build says, so it is never taken for a wheel."""
    return "partial: targets " + ", ".join(targets)


def partial_argv(
    tv_full: TorchEnv, targets: Sequence[str], out: Path, keep: Sequence[str] = ()
) -> list[str | os.PathLike[str]]:
    """``keep``: targets kept when the tree has them (``knowledge/data/partial.toml`` [keep])."""
    return [tv_full.python_exe, "-c", PARTIAL_DRIVER, ",".join(targets), out, ",".join(keep)]


def partial_extensions(out: Path) -> list[Path]:
    """The extension files a partial build installed under ``out``."""
    return sorted(p for p in out.rglob("*.so") if p.is_file())


def _log_times(ninja_log: Path) -> dict[str, tuple[int, int]]:
    """output -> (start ms, end ms) of its latest record in .ninja_log."""
    times: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for line in ninja_log.read_text(errors="replace").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
                times[parts[3]] = (int(parts[0]), int(parts[1]))
    return times


_TARGET_DIR = re.compile(r"^CMakeFiles/([^/]+)\.dir/")


def target_figures(build_dir: Path) -> dict[str, dict[str, Any]]:
    """Per CMake target with compile edges in ``build_dir``: its work edges, how many of
    them .ninja_log records as built, the seconds those edges took (each edge's own
    time, summed: compile seconds, about CPU seconds where jobs <= cores), the longest
    edge, and the wall span from the first edge's start to the last edge's end (one
    ninja run's clock: meaningful when they were built in one run)."""
    manifest = build_dir / "build.ninja"
    if not manifest.is_file():
        return {}
    edges = parse_ninja_edges(manifest.read_text(errors="replace"))
    names = sorted(
        {m.group(1) for o in edges for m in [_TARGET_DIR.match(o)] if m and m.group(1) in edges}
    )
    times = _log_times(build_dir / ".ninja_log")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        outs = _work_from(edges, [name])
        if not outs:
            continue
        done = [times[o] for o in outs if o in times]
        each = [(e - s) / 1000 for s, e in done]
        fig: dict[str, Any] = {"edges": len(outs), "edges_done": len(done)}
        if done:
            fig |= {
                "edge_seconds": round(sum(each), 1),
                "longest_edge_s": round(max(each), 1),
                "span_s": round((max(e for _, e in done) - min(s for s, _ in done)) / 1000, 1),
            }
        out[name] = fig
    return out


class ConfigureClock:
    """How long setup.py + CMake took before ninja's first step, and what CMake itself
    says it spent ("-- Configuring done (12.3s)", "-- Generating done (0.9s)")."""

    _DONE = re.compile(r"^-- (Configuring|Generating) done \(([\d.]+)s\)")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.t0 = clock()
        self.first_step: float | None = None
        self.cmake: dict[str, float] = {}

    def feed(self, line: str) -> None:
        m = self._DONE.match(line.strip())
        if m:
            self.cmake[m.group(1).lower() + "_s"] = float(m.group(2))
        elif self.first_step is None and _NINJA_LINE.match(line):
            self.first_step = self.clock()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.cmake)
        if self.first_step is not None:
            out["until_first_step_s"] = round(self.first_step - self.t0, 1)
        return out


# ------------------------------------------------------------------ version label


def local_label(cuda: str, torch_version: str) -> str:
    """``cu124torch2.3`` for CUDA 12.4 and torch 2.3.0+cu121."""
    t = Version(torch_version)
    return f"cu{cuda.replace('.', '')}torch{t.major}.{t.minor}"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


@dataclass(frozen=True)
class WheelName:
    name: str  # as in the file name (escaped)
    version: str
    build: str | None
    tags: str  # python-abi-platform

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        if not filename.endswith(".whl"):
            raise ValueError(f"not a wheel: {filename}")
        parts = filename[:-4].split("-")
        if len(parts) == 5:
            return cls(parts[0], parts[1], None, "-".join(parts[2:]))
        if len(parts) == 6:
            return cls(parts[0], parts[1], parts[2], "-".join(parts[3:]))
        raise ValueError(f"not a wheel file name: {filename}")

    def filename(self) -> str:
        build = f"-{self.build}" if self.build else ""
        return f"{self.name}-{self.version}{build}-{self.tags}.whl"


def relabel_wheel(wheel: Path, label: str, dest_dir: Path) -> Path:
    """Write ``wheel`` into ``dest_dir`` with version ``<public>+<label>``.

    The file name, the ``.dist-info`` (and ``.data``) directory names and METADATA's
    Version change together; RECORD is regenerated for the new names (signatures, which
    the change invalidates, are dropped). Written to a hidden temp name in ``dest_dir``
    and renamed, so ``dest_dir`` holds the old wheel or the new one, never a part.
    """
    wn = WheelName.parse(wheel.name)
    try:
        public = Version(wn.version).public
        new_version = str(Version(f"{public}+{label}"))
    except InvalidVersion as exc:
        raise BuildError(
            f"cannot label version {wn.version!r} with {label!r}: {exc}",
            fix="check the wheel's version and the local label",
        ) from exc
    old_prefixes = (f"{wn.name}-{wn.version}.dist-info/", f"{wn.name}-{wn.version}.data/")
    new_prefixes = (f"{wn.name}-{new_version}.dist-info/", f"{wn.name}-{new_version}.data/")
    new_info = new_prefixes[0]

    def rename(member: str) -> str:
        for old, new in zip(old_prefixes, new_prefixes, strict=True):
            if member.startswith(old):
                return new + member[len(old) :]
        return member

    out_name = WheelName(wn.name, new_version, wn.build, wn.tags).filename()
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / out_name
    tmp = dest_dir / f".{out_name}.{os.getpid()}.partial"
    try:
        with zipfile.ZipFile(wheel) as zin:
            infos = zin.infolist()
            if not any(i.filename == old_prefixes[0] + "METADATA" for i in infos):
                raise BuildError(
                    f"{wheel.name}: no {old_prefixes[0]}METADATA",
                    fix="the wheel does not follow the wheel spec; rebuild it",
                )
            skip = {old_prefixes[0] + n for n in ("RECORD", "RECORD.jws", "RECORD.p7s")}
            members = [i for i in infos if i.filename not in skip and not i.is_dir()]
            # dist-info last (the spec's recommendation), RECORD at the very end.
            members.sort(key=lambda i: i.filename.startswith(old_prefixes[0]))
            rows: list[list[str]] = []
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zout:
                for info in members:
                    data = zin.read(info)
                    name = rename(info.filename)
                    if name == new_info + "METADATA":
                        data = _set_metadata_version(data, new_version)
                    zi = zipfile.ZipInfo(name, date_time=info.date_time)
                    zi.external_attr = info.external_attr
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    zout.writestr(zi, data)
                    rows.append([name, _record_hash(data), str(len(data))])
                rows.append([new_info + "RECORD", "", ""])
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                zi = zipfile.ZipInfo(new_info + "RECORD", date_time=time.localtime()[:6])
                zi.external_attr = 0o644 << 16
                zi.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(zi, buf.getvalue())
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _set_metadata_version(data: bytes, version: str) -> bytes:
    text = data.decode("utf-8")
    head, sep, body = text.partition("\n\n")
    new_head, n = re.subn(r"(?m)^Version: .*$", f"Version: {version}", head, count=1)
    if n != 1:
        raise BuildError("METADATA has no Version header", fix="rebuild the wheel")
    return (new_head + sep + body).encode("utf-8")


def _clear_partials(dist: Path) -> list[str]:
    """Temp wheels a killed run left in dist/ (their pid is gone)."""
    removed = []
    for p in dist.glob(".*.partial"):
        m = re.search(r"\.(\d+)\.partial$", p.name)
        if m and _pid_alive(int(m.group(1))):
            continue
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ ccache


def ccache_env(
    src: Path, cdir: Path, remote: str | None = None, shared_root: Path | None = None
) -> dict[str, str]:
    """The ccache settings of a build of the work copy ``src`` (shared cache ``cdir``).

    ``remote``: ccache's remote storage, shared by many machines (see ``ccache_remote``);
    ``shared_root``: the directory holding everything the compiles include besides the
    system (the cache root: work copies, toolkits, torch envs, FetchContent sources)."""
    basedir = src
    remote_env: dict[str, str] = {}
    if remote:
        remote_env = {
            "CCACHE_REMOTE_STORAGE": remote,
            # ccache identifies the compiler by its mtime by default; on another machine
            # the same nvcc is another file (a PyPI toolkit gets its unzip time): measured,
            # two copies of one compiler with different mtimes never hit each other's
            # results; with "content" they do.
            "CCACHE_COMPILERCHECK": "content",
        }
        # Measured: torch headers under another machine's cache root (another $HOME) made
        # every compile a remote miss with the work copy as base dir, a hit with the
        # cache root (paths under it hash relative to the compile's working directory).
        if shared_root is not None and src.is_relative_to(shared_root):
            basedir = shared_root
    return remote_env | {
        "CCACHE_DIR": str(cdir),
        # Paths under the work copy hash as relative: another work dir of the same tree
        # (a sibling cell, a clean rebuild elsewhere) can hit.
        "CCACHE_BASEDIR": str(basedir),
        # vLLM builds RelWithDebInfo (-g): ccache then hashes the working directory
        # (hash_dir), which differs per work dir, so nothing hit across work dirs
        # (measured: a clean canary rebuild in a new dir, 20 of 35 calls missed). The
        # cost: debug info names the first build's directory.
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": CCACHE_MAXSIZE,
    }


# ccache's remote storage for every machine building the matrix: this variable, else
# matrix.toml's [ccache] remote. "off" turns the matrix's remote off on one machine.
REMOTE_ENV = "VLLM_MATRIX_CCACHE_REMOTE"
REMOTE_CHECK_SECONDS = 2.0
_REMOTE_DEFAULT_PORTS = {"redis": 6379, "http": 80, "https": 443}


def remote_setting(
    matrix_remote: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The remote storage asked for: ``VLLM_MATRIX_CCACHE_REMOTE``, else the matrix's."""
    value = (os.environ if environ is None else environ).get(REMOTE_ENV, "").strip()
    if value.lower() in ("off", "none"):
        return None
    if not value:
        return matrix_remote
    return " ".join(config.check_ccache_remote(u, REMOTE_ENV) for u in value.split())


def redact(url: str) -> str:
    """``redis://user:secret@host`` → ``redis://user:***@host`` (for logs and results)."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", url)


def remote_problem(url: str, timeout: float = REMOTE_CHECK_SECONDS) -> str | None:
    """None when ccache can reach the remote storage ``url``, else why not.

    A TCP connect for redis:// and http(s):// (host and port from the URL, ccache's
    ``|attribute=value`` suffix ignored), the socket for redis+unix://, the directory for
    file://; other schemes are left to ccache."""
    base = url.split("|", 1)[0]
    scheme, _, rest = base.partition("://")
    if scheme == "redis+unix":
        path = rest.split("?", 1)[0]
        return None if Path(path).is_socket() else f"no socket at {path}"
    if scheme == "file":
        d = Path(rest)
        return None if d.is_dir() and os.access(d, os.W_OK) else f"{d} is not a writable dir"
    if scheme not in _REMOTE_DEFAULT_PORTS:
        return None
    hostport = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if hostport.startswith("["):  # [v6]:port
        host, _, port_s = hostport[1:].partition("]")
        port_s = port_s.lstrip(":")
    else:
        host, _, port_s = hostport.partition(":")
    try:
        port = int(port_s) if port_s else _REMOTE_DEFAULT_PORTS[scheme]
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return f"cannot connect to {host}:{port_s or _REMOTE_DEFAULT_PORTS[scheme]} ({exc})"


@dataclass(frozen=True)
class RemoteCache:
    """What a build hands ccache: ``url`` (None: local only) and, when a remote asked for
    could not be reached, the one warning saying so."""

    asked: str | None
    url: str | None
    warning: str | None = None


def ccache_remote(asked: str | None, timeout: float = REMOTE_CHECK_SECONDS) -> RemoteCache:
    """Check the remote storage before a build: an unreachable one is left out (the build
    goes on with the local cache, one warning), so it never fails or stalls a build.
    ccache itself also carries on past remote errors that happen mid-build (it counts
    them as ``remote_storage_error``)."""
    if not asked:
        return RemoteCache(None, None)
    ok, bad = [], []
    for u in asked.split():
        why = remote_problem(u, timeout)
        if why is None:
            ok.append(u)
        else:
            bad.append(f"{redact(u)}: {why}")
    warning = (
        f"ccache remote storage unreachable, building with the local cache only: {'; '.join(bad)}"
        if bad
        else None
    )
    return RemoteCache(asked, " ".join(ok) or None, warning)


def ccache_remote_checked(
    asked: str | None, progress: Callable[[str], None] | None, findings: list[Finding]
) -> RemoteCache:
    """``ccache_remote`` for the build stage: its warning printed once and kept."""
    remote = ccache_remote(asked)
    if remote.warning:
        if progress is not None:
            progress(f"warning: {remote.warning}")
        findings.append(
            Finding(
                "ccache-remote",
                "warn",
                remote.warning,
                f"start the cache server or fix {REMOTE_ENV} / matrix.toml [ccache] remote",
            )
        )
    return remote


def ccache_stats(ccache: str, env: Mapping[str, str]) -> dict[str, int]:
    try:
        out = proc.run([ccache, "--print-stats"], env=dict(env), check=False, timeout=60)
    except MatrixError:
        return {}
    stats: dict[str, int] = {}
    for line in out.output.splitlines():
        k, _, v = line.partition("\t")
        if v.strip().isdigit():
            stats[k.strip()] = int(v)
    return stats


def _ccache_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in CCACHE_KEYS if k in after}


# ------------------------------------------------------------------ the stage


def _classified(log: Path) -> list[Finding]:
    try:
        from vllm_matrix.knowledge import classify
    except ImportError:  # being written alongside; without it the tail stands
        return []
    try:
        return [classify.classify_file(log).to_finding(str(log))]
    except (MatrixError, OSError, ValueError) as exc:
        return [Finding("classify", "info", f"could not classify the log: {exc}")]


def _rotate(log: Path) -> None:
    if log.exists():
        os.replace(log, log.with_name(log.stem + ".prev" + log.suffix))


def pip_wheel_argv(tv_full: TorchEnv, src: Path, wheelhouse: Path) -> list[str | os.PathLike[str]]:
    """The command the build wraps: vLLM's documented build with an existing torch.

    ``--no-build-isolation`` keeps the env's torch (the whole point); ``--no-deps`` and
    ``--no-index`` keep pip from resolving or downloading anything: the env already holds
    the build requirements (env variant "full").
    """
    return [
        tv_full.python_exe,
        "-m",
        "pip",
        "wheel",
        "-v",
        "--no-build-isolation",
        "--no-deps",
        "--no-index",
        src,
        "-w",
        wheelhouse,
    ]


def _default_series() -> tuple[patches_mod.Patch, ...]:
    path = patches_mod.default_series()
    return patches_mod.load_series(path) if path.is_file() else ()


def build_wheel(
    cell: Cell,
    tree: SourceTree,
    tk: Toolkit,
    tv_full: TorchEnv,
    fx: Fixups,
    work: Path,
    dist: Path,
    *,
    jobs: int | None = None,
    nvcc_threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    series: Sequence[patches_mod.Patch] | None = None,
    log: Path | None = None,
    clean: bool = False,
    ccache: bool = True,
    ccache_dir: Path | None = None,
    ccache_remote: str | None = None,
    meminfo: Path = Path("/proc/meminfo"),
    interval: float = PROGRESS_INTERVAL,
    timeout: float | None = None,
    extra_env: Mapping[str, str] | None = None,
    targets: Sequence[str] = (),
) -> StageResult:
    """Build the cell's wheel into ``dist`` (see the module docstring).

    ``targets`` (CMake extension targets, e.g. ``("_C", "_C_stable_libtorch")``) makes it a
    partial build: vLLM's setup.py builds only those extensions (``PARTIAL_DRIVER``) into
    ``<work>/partial/vllm/``; no wheel is made and the result says "partial: targets ...".

    ``jobs`` / ``nvcc_threads`` override the sizing (default: the cell's options, else
    computed); ``series`` the patch series (default: the project's patches/series.toml);
    ``clean`` remakes the work copy (a from-scratch build); ``ccache=False`` keeps
    ccache out (CCACHE_DISABLE) for a cold measurement; ``extra_env`` adds variables (the
    FetchContent dependencies' ``*_SRC_DIR``, from ``externals.build_env``). Ctrl-C stops
    the build, removes temporary files and re-raises; kill -9 leaves only the work dir,
    which the next run resumes.
    """
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    work = work.resolve()
    dist = dist.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = (log or work / "build.log").resolve()
    src = work / "src"
    findings: list[Finding] = []
    details: dict[str, Any] = {"work": str(work), "log": str(log)}
    # "current": the user's own env (--env current), which holds what it holds; a missing
    # build requirement shows as setup.py's import error in the log.
    if tv_full.variant not in ("full", "current"):
        raise BuildError(
            f"the build needs the cell's full torch env, got the {tv_full.variant!r} variant "
            f"at {tv_full.root}",
            fix='pass env.provide(python, torch, "full"): vLLM\'s setup.py imports torch',
        )
    if fx.problems:
        raise BuildError(
            "the fixups report problems: " + "; ".join(p.message for p in fx.problems),
            fix="; ".join(p.fix for p in fx.problems),
        )
    with locked(src):
        # A killed run's compilers (ninja starts each in a process group of its own) may
        # still be writing objects into the build dir: end them before ninja starts.
        stale = proc.working_in(src) if src.exists() else []
        for pid in stale:
            proc.kill_tree(pid)
        if stale:
            details["ended_orphans"] = stale
            if progress is not None:
                progress(f"build: ended {len(stale)} processes a killed run left in {src}")
        _rotate(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        left = _clear_partials(dist) if dist.is_dir() else []
        if left:
            details["removed_partials"] = left
        chosen = patches_mod.select(
            series if series is not None else _default_series(), tree.version
        )
        wc = prepare_work_copy(tree, src, chosen, log, clean=clean)
        details["work_copy"] = {
            "root": str(wc.root),
            "reused": wc.reused,
            "remade_because": wc.remade_because,
            "patches": list(wc.applied),
            "pins_removed": [c.to_json() for c in wc.pins],
        }
        logged_before = _ninja_logged(src)
        resumed = wc.reused and logged_before > 0

        text = meminfo.read_text() if meminfo.is_file() else ""
        plan = plan_jobs(
            cpu_count(),
            mem_available_gib(text),
            len(cell.arch),
            jobs=jobs if jobs is not None else cell.options.max_jobs,
            nvcc_threads=nvcc_threads if nvcc_threads is not None else cell.options.nvcc_threads,
        )
        details["jobs"] = plan.to_json()
        if plan.low_memory:
            findings.append(
                Finding(
                    "jobs",
                    "warn",
                    f"MemAvailable {plan.mem_available_gib:.1f} GiB is less than one nvcc "
                    f"job needs (~{plan.per_job_gib:g} GiB): the build may be OOM-killed",
                    "free memory or build on a larger machine",
                )
            )

        env = fx.env()
        env.update(plan.env())
        env.update(extra_env or {})
        # The status format progress parsing relies on (a user's NINJA_STATUS may differ).
        env["NINJA_STATUS"] = "[%f/%t] "
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PIP_NO_INPUT"] = "1"
        ccache_exe = shutil.which("ccache", path=env.get("PATH"))
        cc_info: dict[str, Any] = {"exe": ccache_exe}
        if ccache_exe is None:
            cc_info["note"] = "ccache is not on the build PATH: vLLM's setup.py builds without"
        else:
            cdir = ccache_dir or cache_root() / "ccache"
            cdir.mkdir(parents=True, exist_ok=True)
            remote = ccache_remote_checked(ccache_remote if ccache else None, progress, findings)
            env.update(
                ccache_env(src, cdir, remote.url, shared_root=cache_root())
                | {"CCACHE_MAXSIZE": env.get("CCACHE_MAXSIZE", CCACHE_MAXSIZE)}
            )
            if not ccache:
                env["CCACHE_DISABLE"] = "1"
            cc_info |= {"dir": str(cdir), "enabled": ccache}
            if remote.asked:
                cc_info["remote"] = redact(remote.url or "") or None
                cc_info["remote_asked"] = redact(remote.asked)
        stats_before = ccache_stats(ccache_exe, env) if ccache_exe and ccache else {}
        details["env"] = (
            fx.vars()
            | plan.env()
            | dict(extra_env or {})
            | {
                k: env[k]
                for k in ("CCACHE_DIR", "CCACHE_BASEDIR", "CCACHE_NOHASHDIR", "CCACHE_DISABLE")
                if k in env
            }
            | (
                {
                    "CCACHE_REMOTE_STORAGE": redact(env["CCACHE_REMOTE_STORAGE"]),
                    "CCACHE_COMPILERCHECK": env.get("CCACHE_COMPILERCHECK", ""),
                }
                if "CCACHE_REMOTE_STORAGE" in env
                else {}
            )
        )

        wheelhouse = work / "wheelhouse"
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheelhouse.mkdir()
        tracker = NinjaProgress(
            emit=progress, interval=interval, overall=OverallProgress(src, targets), jobs=plan.jobs
        )
        partial_out = work / PARTIAL_DIR
        if targets:
            shutil.rmtree(partial_out, ignore_errors=True)
            argv = partial_argv(tv_full, targets, partial_out, partial.load().keep)
            details["partial"] = {"targets": list(targets), "out": str(partial_out)}
        else:
            argv = pip_wheel_argv(tv_full, src, wheelhouse)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(
                f"# vllm-matrix build of {cell.id}: work copy "
                f"{'reused' if wc.reused else 'made'} ({wc.remade_because or 'ok'})\n"
                f"# jobs: {plan.reason}\n# ccache: {cc_info}\n"
            )
        if progress is not None:
            progress(
                f"build: {'resuming' if resumed else 'starting'} in {src} "
                f"(MAX_JOBS={plan.max_jobs_env}, NVCC_THREADS={plan.nvcc_threads}; log {log})"
            )
        setup = ConfigureClock()

        def on_line(line: str) -> None:
            setup.feed(line)
            tracker.on_line(line)

        try:
            done = proc.run(
                argv,
                log=log,
                env=env,
                cwd=src,
                check=False,
                capture=False,
                on_line=on_line,
                timeout=timeout,
            )
        except BaseException:  # Ctrl-C: ninja got SIGINT too; leave no wheel behind
            shutil.rmtree(wheelhouse, ignore_errors=True)
            raise
        finally:
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            details["resources"] = {
                "wall_s": round(time.monotonic() - t0, 1),
                "cpu_user_s": round(ru1.ru_utime - ru0.ru_utime, 1),
                "cpu_sys_s": round(ru1.ru_stime - ru0.ru_stime, 1),
                # The largest single descendant over this process's life (getrusage).
                "peak_child_rss_mib": round(ru1.ru_maxrss / 1024),
                "loadavg": list(os.getloadavg()),
            }
            details["configure"] = setup.to_json()
        dirs = _build_dirs(src)
        total_edges = sum(ninja_work_edges(d / "build.ninja", targets) for d in dirs)
        details["targets"] = {k: v for d in dirs for k, v in target_figures(d).items()}
        whole = OverallProgress(src, targets)()  # ninja has exited: .ninja_log is complete
        if progress is not None and whole is not None:
            progress(
                f"build: {'setup.py build_ext' if targets else 'pip wheel'} exited "
                f"{done.returncode} after "
                f"{fmt_seconds(time.monotonic() - t0)}; all targets {whole[0]}/{whole[1]} "
                f"({100 * whole[0] // max(1, whole[1])}%)"
            )
        steps = {
            "runs": [r.to_json() for r in tracker.runs],
            "no_work_runs": tracker.no_work,
            "steps_run": tracker.steps_run,
            "work_edges": total_edges,
            "resumed": resumed,
            "logged_before": logged_before,
        }
        if resumed and total_edges:
            steps["steps_skipped"] = max(0, total_edges - tracker.steps_run)
        details["steps"] = steps
        if ccache_exe and ccache:
            cc_info["delta"] = _ccache_delta(stats_before, ccache_stats(ccache_exe, env))
        details["ccache"] = cc_info

        if done.returncode != 0:
            shutil.rmtree(wheelhouse, ignore_errors=True)
            what = f"{partial_label(targets)}: setup.py build_ext" if targets else "pip wheel"
            found = _classified(log) or [
                Finding(
                    "build",
                    "fail",
                    f"{what} exited with {done.returncode}",
                    "read the log's tail",
                    (str(log),),
                )
            ]
            details["tail"] = _tail(log)
            return StageResult(
                "build",
                FAIL,
                0.0,
                f"{partial_label(targets) + ': ' if targets else ''}"
                f"build failed after {fmt_seconds(time.monotonic() - t0)} "
                f"(exit {done.returncode}); log {log}",
                tuple(findings + found),
                details,
                str(log),
            )
        if targets:
            shutil.rmtree(wheelhouse, ignore_errors=True)
            return _partial_result(
                targets, partial_out, details, findings, steps, tracker, plan, t0, log
            )
        built = sorted(wheelhouse.glob("*.whl"))
        if len(built) != 1:
            raise BuildError(
                f"pip wheel succeeded but left {len(built)} wheels in {wheelhouse}",
                fix=f"read {log}",
            )
        label = local_label(tk.version, tv_full.torch_version)
        final = relabel_wheel(built[0], label, dist)
        shutil.rmtree(wheelhouse, ignore_errors=True)
    size = final.stat().st_size
    details |= {
        "wheel": str(final),
        "built_as": built[0].name,
        "size_bytes": size,
        "label": label,
        "sha256": hashlib.sha256(final.read_bytes()).hexdigest(),
    }
    how = f"resumed, {steps.get('steps_skipped', '?')} steps skipped; " if resumed else ""
    summary = (
        f"{final.name} ({size / 2**20:.1f} MiB) in {fmt_seconds(time.monotonic() - t0)}; "
        f"{how}{tracker.steps_run} ninja steps, MAX_JOBS={plan.max_jobs_env}"
    )
    status = WARN if any(f.level == "warn" for f in findings) else PASS
    return StageResult("build", status, 0.0, summary, tuple(findings), details, str(log))


def _partial_result(
    targets: Sequence[str],
    out: Path,
    details: dict[str, Any],
    findings: list[Finding],
    steps: Mapping[str, Any],
    tracker: NinjaProgress,
    plan: JobPlan,
    t0: float,
    log: Path,
) -> StageResult:
    """A partial build's result: the extensions it installed, never a wheel."""
    exts = partial_extensions(out)
    if not exts:
        raise BuildError(
            f"{partial_label(targets)}: the build succeeded but installed no extension under {out}",
            fix=f"read {log}: the targets may produce no .so (Python-only components)",
        )
    size = sum(p.stat().st_size for p in exts)
    details["partial"] = {
        "targets": list(targets),
        "out": str(out),
        "extensions": [str(p) for p in exts],
        "size_bytes": size,
    }
    how = "resumed; " if steps.get("resumed") else ""
    summary = (
        f"{partial_label(targets)} (not a wheel): {len(exts)} extensions "
        f"({', '.join(p.name for p in exts)}, {size / 2**20:.1f} MiB) in "
        f"{fmt_seconds(time.monotonic() - t0)}; {how}{tracker.steps_run} ninja steps, "
        f"MAX_JOBS={plan.max_jobs_env}"
    )
    status = WARN if any(f.level == "warn" for f in findings) else PASS
    return StageResult("build", status, 0.0, summary, tuple(findings), details, str(log))


def _tail(log: Path, lines: int = 60) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
