"""Running one unit's pipeline (front end, or codegen for one arch), and many at once."""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vllm_matrix.infra import proc
from vllm_matrix.infra.results import Finding
from vllm_matrix.stages.probe import frontcache
from vllm_matrix.stages.probe.dryrun import Step, parse_dryrun
from vllm_matrix.stages.probe.files import read_text
from vllm_matrix.stages.probe.units import Unit
from vllm_matrix.stages.toolkit import Toolkit


def cached_step(pass_: str, phase: str, tool: str) -> dict[str, Any]:
    """A step the front-end cache answered: recorded, nothing run."""
    return {
        "pass": pass_,
        "phase": phase,
        "tool": tool,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
        "rc": 0,
        "cached": True,
    }


@dataclass
class UnitResult:
    unit: Unit
    status: str = "not-run"  # pass | fail | not-probed | timeout | not-run
    depth: str = "none"  # none | front-end | codegen (the deepest phase group run)
    seconds: float = 0.0
    front_end_s: float = 0.0
    codegen_s: float = 0.0
    # CPU seconds of the compilers it ran (wait4 of each step: this unit's alone, also
    # beside another cell's probe; with its share of a shared front end, passed or not);
    # front_end_cpu_s: of the front-end steps its verdict rests on
    cpu_s: float = 0.0
    front_end_cpu_s: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    first_error: str | None = None
    log: str = ""
    note: str = ""
    finding: Finding | None = None
    # the front end's pass came from the content cache (frontcache.py): "hit" | "miss" | ""
    front_end_cache: str = ""
    # the front end ran for several units at once (unity.py): {"units", "seconds", "log"};
    # then ``seconds`` is this unit's share and ``front_end_s`` the whole front end's time
    # (what one unit's front end costs at most: torch's headers are most of it)
    front_end_group: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "front_end_cache": self.front_end_cache,
            "path": self.unit.path,
            "why": self.unit.why,
            "kind": self.unit.kind,
            "family": self.unit.family,
            "target": self.unit.target,
            "archs": list(self.unit.archs),
            "needs": list(self.unit.needs),
            "api_torch": list(self.unit.api_torch),
            "depth": self.depth,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "front_end_s": round(self.front_end_s, 1),
            "codegen_s": round(self.codegen_s, 1),
            "cpu_s": round(self.cpu_s, 1),
            "front_end_cpu_s": round(self.front_end_cpu_s, 1),
            "front_end_group": self.front_end_group,
            "steps": self.steps,
            "first_error": self.first_error,
            "log": self.log,
            "note": self.note,
        }


_ERROR_LINE = re.compile(r"(\berror\b|\bError\b|fatal error|Killed|signal 9)")


def first_error(log: Path) -> str | None:
    for line in read_text(log).splitlines():
        if line.startswith(("$ ", "# ", "#$ ")):
            continue
        if _ERROR_LINE.search(line):
            return line.strip()
    return None


class UnitRunner:
    def __init__(
        self,
        unit: Unit,
        unit_flags: list[str],
        tree: Path,
        tk: Toolkit,
        env: dict[str, str],
        work: Path,
        timeout_s: float,
    ) -> None:
        self.u, self.flags, self.tree, self.tk, self.env = unit, unit_flags, tree, tk, env
        self.work, self.timeout_s = work, timeout_s
        self.log = work / "logs" / f"{unit.name}.log"
        self.pass_ = "main"
        self.keep = work / "tmp" / unit.name
        self.obj = work / "obj" / f"{unit.name}.o"
        self.fe_cache: frontcache.FrontEndCache | None = None
        # the file nvcc compiles, where it is not the unit's own (a generated unity file)
        self.source: Path | None = None

    def dryrun(
        self, flags: Sequence[str], *, log: bool = True
    ) -> tuple[list[Step], dict[str, str]]:
        """nvcc's pipeline for this unit (no steps: nvcc refused the flags, e.g. an arch it
        does not know), and the environment it gives its commands."""
        src = str(self.source or self.tree / self.u.path)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.keep.mkdir(parents=True, exist_ok=True)
        dry = proc.run(
            [
                str(self.tk.nvcc),
                *flags,
                "-c",
                src,
                "-o",
                str(self.obj),
                "--dryrun",
                "--keep",
                "--keep-dir",
                str(self.keep),
            ],
            log=self.log if log else None,
            env=self.env,
            cwd=self.work,
            check=False,
            timeout=120,
        )
        steps, nvcc_env = parse_dryrun(dry.output)
        return (steps if dry.returncode == 0 else []), nvcc_env

    def exec_step(
        self, phase: str, argv: Sequence[str], env: dict[str, str], res: UnitResult
    ) -> bool:
        if phase == "rm":
            for p in argv[1:]:
                with contextlib.suppress(OSError):
                    Path(p).unlink()
            return True
        if _STOP.is_set():
            res.status, res.note = "interrupted", "stopped by Ctrl-C"
            return False
        left = self.timeout_s - res.seconds
        if left <= 0:
            res.status = "timeout"
            return False
        t0 = time.monotonic()
        done = proc.run(argv, log=self.log, env=env, cwd=self.work, check=False, timeout=left)
        dt = time.monotonic() - t0
        res.seconds += dt
        res.cpu_s += done.cpu_seconds
        # A second, codegen-only pass (depth auto) redoes the front end for one arch: its
        # whole pipeline is the codegen cost.
        if phase in ("host-preprocess", "front-end") and self.pass_ != "codegen-pass":
            res.front_end_s += dt
            res.front_end_cpu_s += done.cpu_seconds
        else:
            res.codegen_s += dt
        res.steps.append(
            {
                "pass": self.pass_,
                "phase": phase,
                "tool": Path(argv[0]).name,
                "seconds": round(dt, 1),
                "cpu_seconds": round(done.cpu_seconds, 1),
                "rc": done.returncode,
            }
        )
        if done.returncode == -9 and time.monotonic() - t0 >= left:  # proc.run's timeout
            res.status = "timeout"
            res.note = f"stopped after {res.seconds:.0f}s (limit {self.timeout_s:.0f}s) in {phase}"
            return False
        if done.returncode != 0:
            res.status = "fail"
            return False
        return True

    def run(
        self, depth: str, res: UnitResult, gencode: list[str] | None = None, pass_: str = "main"
    ) -> None:
        """Run the unit's pipeline through ``depth`` ("front-end" | "codegen")."""
        self.pass_ = pass_
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.keep.mkdir(parents=True, exist_ok=True)
        self.obj.parent.mkdir(parents=True, exist_ok=True)
        src = str(self.source or self.tree / self.u.path)
        flags_now = list(self.flags)
        if gencode is not None:
            flags_now = _replace_gencode(flags_now, gencode)
        if self.u.kind == "cxx":
            cxx = self.env.get("CXX") or shutil.which("c++") or "g++"
            mode = ["-fsyntax-only"] if depth == "front-end" else ["-c", "-o", str(self.obj)]
            ok = self.exec_step(
                "front-end" if depth == "front-end" else "host-compile",
                [cxx, *flags_now, *mode, src],
                self.env,
                res,
            )
            res.depth = depth
            if ok:
                res.status = "pass"
            return
        steps, nvcc_env = self.dryrun(flags_now)
        if not steps:
            res.status, res.depth = "fail", "none"
            res.note = "nvcc --dryrun failed"
            return
        env = dict(self.env)
        env.update(nvcc_env)
        stop = len(steps)
        if depth == "front-end":
            fe = next((i for i, s in enumerate(steps) if s.phase == "front-end"), None)
            stop = fe + 1 if fe is not None else stop
        key = None
        for s in steps[:stop]:
            res.depth = "front-end" if s.phase in ("host-preprocess", "front-end") else "codegen"
            # only when the front end is the last step: a codegen run needs its outputs
            if s.phase == "front-end" and depth == "front-end" and self.fe_cache is not None:
                key = self.fe_cache.key(s.argv, self.roots())
                if key is not None and self.fe_cache.passed(key):
                    res.front_end_cache = "hit"
                    res.steps.append(cached_step(pass_, s.phase, Path(s.argv[0]).name))
                    continue
                res.front_end_cache = "miss" if key is not None else ""
            t_fe = res.seconds
            if not self.exec_step(s.phase, s.argv, env, res):
                return
            if s.phase == "front-end" and key is not None and self.fe_cache is not None:
                self.fe_cache.store(key, self.u.path, res.seconds - t_fe)
        res.depth = depth
        res.status = "pass"

    def roots(self) -> dict[str, str]:
        """Paths that differ between cells but not in content: the release's tree and the
        probe's work dir (nvcc's --keep files)."""
        return {str(self.tree): "<tree>", str(self.work): "<work>"}


def _replace_gencode(unit_flags: list[str], gencode: list[str]) -> list[str]:
    out: list[str] = []
    i, placed = 0, False
    while i < len(unit_flags):
        if unit_flags[i] == "-gencode" and i + 1 < len(unit_flags):
            if not placed:
                out += gencode
                placed = True
            i += 2
            continue
        out.append(unit_flags[i])
        i += 1
    return out if placed else out + gencode


# ==================================================================== resources


T = TypeVar("T")
_STOP = threading.Event()  # set on Ctrl-C: units not started yet must not start
WAIT_SLICE_S = 0.5


class Slots:
    """The process's compile slots, shared by the probes of cells that run side by side
    (run_matrix's ``at_once``): each job holds one while it runs, so two cells' probes
    together run no more compilers than one cell's would (a probe's tail, its last unit
    alone on one core, is where the next cell's first units run). The earlier cell comes
    first: a slot that frees goes to the waiter with the lowest ``priority`` (the cell's
    place in the run), then the longest waiting."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0
        self._waiting: list[tuple[int, int]] = []  # (priority, ticket)
        self._tickets = 0

    @contextlib.contextmanager
    def hold(self, size: int, priority: int) -> Iterator[None]:
        with self._cond:
            self._tickets += 1
            me = (priority, self._tickets)
            self._waiting.append(me)
            try:
                while self._busy >= size or min(self._waiting) != me:
                    if _STOP.is_set():
                        raise KeyboardInterrupt
                    self._cond.wait(WAIT_SLICE_S)
            finally:
                self._waiting.remove(me)
                self._cond.notify_all()
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()


SLOTS = Slots()
# The running cell's place in the run (run_matrix sets it on the cell's thread): the
# priority of its probe's jobs for SLOTS.
PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("probe_priority", default=0)


def run_all(
    fn: Callable[[T], Sequence[T] | None],
    items: Sequence[T],
    jobs: int,
) -> None:
    """``fn`` over ``items`` on ``jobs`` threads, and over the items a call returns (a
    front end of several units that failed hands back its units, each to run alone); each
    call holds one of the process's ``jobs`` compile slots (``SLOTS``). Ctrl-C (or a
    SIGINT to this process alone) cancels what has not started and ends the compilers
    running, so it stops in seconds instead of waiting for every unit."""
    _STOP.clear()
    priority = PRIORITY.get()

    def slotted(item: T) -> Sequence[T] | None:
        with SLOTS.hold(jobs, priority):
            return fn(item)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        pending = {pool.submit(slotted, item) for item in items}
        while pending:
            # Waits in short slices: a SIGINT the kernel hands to a worker thread (it may
            # pick any thread of the process) is only acted on when the main thread runs
            # Python again; an unbounded wait would hold it until the running unit ends.
            done, pending = wait(pending, timeout=WAIT_SLICE_S, return_when=FIRST_EXCEPTION)
            for f in done:
                more = f.result()  # a unit's own exception, as pool.map raised it
                if more and not _STOP.is_set():
                    pending |= {pool.submit(slotted, item) for item in more}
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    finally:
        pool.shutdown(wait=True)


def stop_all() -> None:
    """Ctrl-C: no unit starts any more, and every compiler of this process ends (probes of
    several cells run side by side on threads that never see the KeyboardInterrupt)."""
    _STOP.set()
    for pid in proc.descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def unit_label(item: tuple[UnitRunner, UnitResult]) -> str:
    return Path(item[0].u.path).name
