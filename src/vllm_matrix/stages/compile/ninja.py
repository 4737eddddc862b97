"""ninja's progress: ``[n/N]`` lines as percent + ETA messages, a heartbeat while no edge
finishes (naming the edges left), and how far a build got from build.ninja and .ninja_log
(work edges, per-target figures, configure time)."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_matrix.stages.compile.schedule import SCHEDULE_JSON, read_ninja_log

PROGRESS_INTERVAL = 5.0
# No edge finished for this long: say so, and which edges are left (vLLM 0.20.0's
# scaled_mm_c2x.cu compiles for 14 min on an H200 host, alone for its last 10).
QUIET_S = 60.0

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
    # What one ninja run covering the whole build is called ("targets _C, _C_stable_libtorch");
    # its first edge's target would name only one of them.
    label: str | None = None
    left: Callable[[], list[str]] | None = None  # the work edges not built yet
    # seconds left by expected edge times (OverallProgress.eta), for a run of the whole build
    timed_eta: Callable[[int], float | None] | None = None
    quiet_s: float = QUIET_S
    runs: list[NinjaRun] = field(default_factory=list)
    no_work: int = 0  # ninja runs that had nothing to do ("ninja: no work to do.")
    _last_other: float | None = None
    _last_emit: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def feed(self, line: str) -> str | None:
        with self._lock:
            return self._feed(line)

    def _feed(self, line: str) -> str | None:
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

    def _name(self, run: NinjaRun, whole: tuple[int, int] | None) -> tuple[str, bool]:
        """The run's name, and whether it covers the whole build (then the "all targets"
        count would repeat its own)."""
        if whole is not None and run.total >= whole[1]:
            return self.label or "all targets", True
        return run.target or f"ninja run {len(self.runs)}", False

    def message(self, run: NinjaRun) -> str:
        pct = 100 * run.done // max(1, run.total)
        eta = run.eta(self.jobs)
        whole = self.overall() if self.overall is not None else None
        name, covers_all = self._name(run, whole)
        if covers_all and eta and self.timed_eta is not None:
            eta = self.timed_eta(self.jobs) or eta
        tail = "" if eta is None else (", done" if eta == 0 else f", ETA {fmt_seconds(eta)}")
        if whole is not None and not covers_all:
            done, total = min(whole[0], whole[1]), whole[1]
            tail += f"; all targets {done}/{total} ({100 * done // max(1, total)}%)"
        return (
            f"build {name}: {run.done}/{run.total} ({pct}%), "
            f"{fmt_seconds(run.last - run.started)} in{tail}"
        )

    def quiet(self) -> str | None:
        """The heartbeat: when nothing was said for ``quiet_s`` while a run is under way
        (ninja prints an edge when it finishes, so a long edge is silence), how long no
        edge has finished and which edges are left; call it every few seconds."""
        with self._lock:
            now = self.clock()
            run = self.runs[-1] if self.runs else None
            if run is None or run.done >= run.total or self._last_emit is None:
                return None
            if now - self._last_emit < self.quiet_s:
                return None
            self._last_emit = now
            whole = self.overall() if self.overall is not None else None
            name, _ = self._name(run, whole)
            msg = (
                f"build {name}: {run.done}/{run.total} ({100 * run.done // max(1, run.total)}%), "
                f"{fmt_seconds(now - run.started)} in, no edge finished for "
                f"{fmt_seconds(now - run.last)}"
            )
            names = self.left() if self.left is not None else []
            if names:
                more = f" and {len(names) - 4} more" if len(names) > 4 else ""
                msg += f"; left: {', '.join(names[:4])}{more}"
        if self.emit is not None:
            self.emit(msg)
        return msg

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

    def eta(self, jobs: int) -> float | None:
        """Seconds left by the schedule's expected edge times (schedule.py writes them
        beside build.ninja), scaled by how long the finished edges took against theirs:
        the larger of the edges left spread over ``jobs`` and the longest one left. None
        without a schedule, before two scheduled edges finished, or once none is left.

        Counting edges alone says nothing true of a longest-first build: its first edges
        are its longest. vLLM 0.20.0's _C + _C_stable_libtorch for 9.0a on 2 cores, 46 of
        81 edges done after 68 min, was told "ETA 51m" by the count; 11 min were left."""
        expected: dict[str, float] = {}
        took: dict[str, float] = {}
        for d in _build_dirs(self.src):
            expected |= _expected_times(d)
            took |= read_ninja_log(d / ".ninja_log")
        done = [e for e in expected if e in took]
        left = [s for e, s in expected.items() if e not in took]
        spent = sum(expected[e] for e in done)
        if len(done) < 2 or not left or spent <= 0:
            return None
        scale = sum(took[e] for e in done) / spent
        return scale * max(sum(left) / max(1, jobs), max(left))

    def left(self) -> list[str]:
        """The work edges .ninja_log does not list yet (compiling or waiting), by file
        name, compile edges first: what a silent build is busy with."""
        self()  # fills the manifests' outputs
        out: list[str] = []
        for d, (_, outs) in sorted(self._outputs.items()):
            with contextlib.suppress(OSError):
                out.extend(outs - ninja_logged(d))
        return sorted((Path(o).name for o in out), key=lambda n: (not n.endswith(".o"), n))


def _expected_times(build_dir: Path) -> dict[str, float]:
    """The schedule's expected seconds per compile edge (``expected`` of its JSON)."""
    try:
        doc = json.loads((build_dir / SCHEDULE_JSON).read_text())
    except (OSError, ValueError):
        return {}
    exp = doc.get("expected") if isinstance(doc, dict) else None
    return {str(k): float(v) for k, v in exp.items()} if isinstance(exp, dict) else {}


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


def edge_log(build_dir: Path) -> list[dict[str, Any]]:
    """Every work edge .ninja_log records (its latest run): CMake target, source file name,
    start and end in seconds on that run's clock: what the build-cost model calibrates on
    (stages/compile/cost.py), kept in the build's result."""
    manifest = build_dir / "build.ninja"
    if not manifest.is_file():
        return []
    edges = parse_ninja_edges(manifest.read_text(errors="replace"))
    work = _work_from(edges, _roots(edges, ()))
    out = []
    for o, (s, e) in sorted(_log_times(build_dir / ".ninja_log").items(), key=lambda i: i[1]):
        if o not in work:
            continue
        m = _TARGET_DIR.match(o)
        out.append(
            {
                "target": m.group(1) if m else "",
                "edge": Path(o).name,
                "start_s": round(s / 1000, 1),
                "end_s": round(e / 1000, 1),
            }
        )
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

    def to_json(self, first_end_s: float | None = None) -> dict[str, Any]:
        """``first_end_s``: when, on ninja's clock (.ninja_log), its first step ended. With
        its output piped, ninja prints "[1/N] ..." as a step ends, not as it starts: without
        it the figure holds that step's own time too (issue 24's H100 hold, longest edges
        first: 193.3 s, of which 164.9 s was the first edge to finish)."""
        out: dict[str, Any] = dict(self.cmake)
        if self.first_step is not None:
            seen = self.first_step - self.t0
            out["until_first_step_s"] = round(max(0.0, seen - (first_end_s or 0.0)), 1)
            if first_end_s is not None:
                out["first_step_line_s"] = round(seen, 1)
        return out
