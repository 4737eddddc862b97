"""Run cells through the plan (pipeline/plan.py) up to a depth; write one result file per
cell.

A stage runs only if the earlier ones allow it. Ctrl-C leaves a valid result
(the running stage marked interrupted) and re-raises.
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import errors, results
from vllm_matrix.infra.config import Cell, Matrix
from vllm_matrix.infra.errors import MatrixError, NotAvailable
from vllm_matrix.infra.results import (
    ERROR,
    FAIL,
    INTERRUPTED,
    PASS,
    PREDICTED_FAIL,
    SKIP,
    Finding,
    StageResult,
)
from vllm_matrix.knowledge import classify
from vllm_matrix.pipeline import plan, reuse
from vllm_matrix.pipeline.context import BuildOptions, CellContext, Workspace
from vllm_matrix.pipeline.prefetch import Prefetcher
from vllm_matrix.stages import probe
from vllm_matrix.stages.preflight import Host

DEFAULT_OPTIONS = BuildOptions()  # frozen: one shared default is safe


def _error(stage: str, message: str, fix: str, tail: str = "") -> StageResult:
    # One line: a command's output belongs in the tail (details), not in the cause.
    message = " ".join(message.split())
    if len(message) > 400:
        message = message[:399] + "…"
    found = (Finding(stage, "error", message, fix),)
    return StageResult(stage, ERROR, 0.0, message, found, {"tail": tail} if tail else {})


# Providers whose toolkit the tool assembles itself: a missing header there is the tool's
# failure (ERROR); in a toolkit the user brought (system, conda-prefix, --env current) it is
# a fact about that environment (FAIL, with the fix).
TOOL_MADE = ("debian", "pypi")


def _timed(
    stage: str,
    fn: Callable[[], StageResult],
    debug: bool = False,
    tool_made: bool = True,
    sided: bool | None = None,
) -> StageResult:
    """Run one stage. A stage says FAIL itself (a compile failed, a rule objects); an
    exception out of a stage is the tool's or the machine's failure: ERROR, never FAIL.
    ``sided``: the stage's FAILs are sorted by side (Stage.sided; None: as PLAN says)."""
    t0, cpu0 = time.monotonic(), _cpu_s()
    try:
        r = fn()
    except NotAvailable as exc:  # cannot be had on this machine: SKIPPED, not FAIL
        found = (Finding(stage, "skip", exc.message, exc.fix or ""),)
        r = StageResult(stage, SKIP, 0.0, exc.message, found)
    except MatrixError as exc:  # a missing program, the index, a command, a data file ...
        tail = getattr(exc, "tail", "")
        message, fix = exc.message, exc.fix or ""
        if errors.NO_SPACE in tail or errors.NO_SPACE in message:  # a command hit a full disk
            message, fix = f"no space left on the device ({message})", errors.NO_SPACE_FIX
        r = _error(stage, message, fix, tail)
    except OSError as exc:  # disk full, a read-only or vanished cache
        if debug:
            raise
        r = _error(stage, *errors.describe_os_error(exc))
    except Exception as exc:  # a bug: say so in one line; --debug shows the traceback
        if debug:
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        r = _error(
            stage,
            f"internal error in vllm-matrix: {type(exc).__name__}: {exc} "
            f"({Path(where.filename).name}:{where.lineno})",
            "a bug in vllm-matrix: rerun with --debug for the traceback and report it",
        )
    if sided is None:
        sided = r.stage in plan.STAGES and plan.STAGES[r.stage].sided
    if r.status == FAIL and sided:
        r = _tool_side(r, tool_made)
    # The process's CPU over the stage (its threads and the commands it waited for): on a
    # shared machine the wall says little, the CPU-seconds say what a stage costs. With
    # cells side by side (run_matrix's at_once > 1) it holds the other cells' work too.
    details = {"process_cpu_s": round(_cpu_s() - cpu0, 1)} | r.details
    return StageResult(
        r.stage, r.status, round(time.monotonic() - t0, 3), r.summary, r.findings, details, r.log
    )


def _cpu_s() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _tool_side(r: StageResult, tool_made: bool) -> StageResult:
    """A compile that failed for the machine's reasons (out of memory, disk full) or for a
    gap in a toolkit the tool assembled (classify's ``side``) is an ERROR, not a fact about
    vLLM -- when every failure of the stage is of that kind."""
    sides = ("machine", "toolkit") if tool_made else ("machine",)
    fails = [f for f in r.findings if f.level == "fail"]
    if not fails or any(classify.side_of(f.rule) not in sides for f in fails):
        return r
    found = tuple(
        Finding(f.rule, "error", f.message, f.fix, f.evidence, f.source) if f.level == "fail" else f
        for f in r.findings
    )
    return StageResult(r.stage, ERROR, r.seconds, r.summary, found, r.details, r.log)


def run_cell(
    cell: Cell,
    ws: Workspace,
    *,
    depth: str = plan.DEFAULT_DEPTH,
    mach: dict[str, Any] | None = None,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
    opts: BuildOptions = DEFAULT_OPTIONS,
    host: Host | None = None,
    plan_stages: Sequence[plan.Stage] = plan.PLAN,
) -> list[StageResult]:
    """The plan's stages up to ``depth``; a stage that fails/skips stops the cell, except
    that ``force`` goes on past a predicted failure (to check the prediction). ``host`` and
    ``mach`` are the machine's facts (detected when None; tests pass fixed ones);
    ``plan_stages`` the plan walked (``plan.PLAN``; tests pass one with stand-in functions)."""
    walk = plan.cut(depth, plan_stages)
    force = force or bool(cell.options.force)  # matrix.toml: options = { force = true }
    previous = reuse.previous(ws, cell)  # read before this run's first write replaces it
    ctx = CellContext(cell, ws, opts, tuple(s.name for s in walk), host, echo, previous)
    mach = mach or results.machine(gpuinfo.names())
    tool_made = cell.env != "current" and cell.provider in TOOL_MADE
    current = walk[0]
    try:
        for stage in walk:
            current = stage
            if _CANCEL.is_set():
                raise KeyboardInterrupt
            if stage.long:
                if echo is not None:  # what the progress lines below belong to
                    echo(f"{cell.id}: {stage.name}")
                placeholder = StageResult(
                    stage.name,
                    INTERRUPTED,
                    0.0,
                    f"started {time.strftime('%Y-%m-%d %H:%M:%S')} by pid {os.getpid()} and "
                    "did not finish (killed, or still running)",
                )
                results.write(ws.results, cell, [*ctx.done, placeholder], mach)
            run = functools.partial(stage.run, ctx)
            r = _timed(stage.name, run, opts.debug, tool_made, stage.sided)
            ctx.done.append(r)
            if not (r.status in (PASS, results.WARN) or (force and r.status == PREDICTED_FAIL)):
                break
    except KeyboardInterrupt:
        details = current.interrupted(ctx) if current.interrupted is not None else {}
        ctx.done.append(
            StageResult(current.name, INTERRUPTED, 0.0, "interrupted (Ctrl-C)", (), details)
        )
        results.write(ws.results, cell, ctx.done, mach)
        raise
    kept = reuse.kept_over_error(previous, ctx.done)
    if kept is not None:
        # Both stay: the older evidence as the result, this run's ERROR as its last_error
        # (the report shows "last run: ERROR at X"); the caller sees this run's ERROR.
        results.write(ws.results, cell, kept, mach, results.error_record(ctx.done))
        if echo is not None:
            old = results.verdict_of(kept)
            echo(f"{cell.id}: kept the earlier {old.verdict} at {old.depth} beside this ERROR")
        return ctx.done
    stages = reuse.keep_deeper(previous, ctx.done)
    results.write(ws.results, cell, stages, mach)
    return stages


def run_matrix(
    matrix: Matrix,
    ws: Workspace,
    depth: str = plan.DEFAULT_DEPTH,
    select: str | None = None,
    echo: Callable[[str], None] | None = None,
    force: bool = False,
    opts: BuildOptions = DEFAULT_OPTIONS,
    host: Host | None = None,
    mach: dict[str, Any] | None = None,
    at_once: int = 1,
    prefetch: bool = False,
) -> list[tuple[Cell, results.CellVerdict]]:
    """Every selected cell; ``at_once`` of them side by side (the next cell's toolkit and
    env are fetched, and its units compiled, while a cell's last units finish: a probe's
    tail and a download leave cores idle; the probes share the process's compile slots,
    the earlier cell first). Verdicts come back in matrix order. ``prefetch``: the cells
    after the running ones have their sources, toolkits, envs and advice facts fetched in
    the background (pipeline/prefetch.py)."""
    plan.check_depth(depth)
    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    cells = matrix.select(select)
    mach = mach or results.machine(gpuinfo.names())

    def one(n: int, cell: Cell) -> results.CellVerdict:
        t0 = time.monotonic()
        probe.PRIORITY.set(n)  # side by side, the earlier cell's units get the cores first
        if ahead is not None:
            ahead.at(n)
        stages = run_cell(
            cell, ws, depth=depth, mach=mach, force=force, echo=say, opts=opts, host=host
        )
        v = results.verdict_of(stages)
        took = time.monotonic() - t0
        say(f"[{n}/{len(cells)}] {cell.id}: {v.label} at {v.depth} ({took:.1f}s)")
        return v

    ahead = None
    if prefetch and len(cells) > 1:
        walk = tuple(s.name for s in plan.cut(depth))
        ahead = Prefetcher(cells, ws.root, walk, force, host, say, width=max(1, at_once))
        ahead.start()
    try:
        if at_once <= 1 or len(cells) <= 1:
            return [(cell, one(n, cell)) for n, cell in enumerate(cells, 1)]
        return _side_by_side(cells, one, at_once)
    finally:
        if ahead is not None:  # Ctrl-C too: it ends at its next item (a daemon thread)
            ahead.stop()


def _side_by_side(
    cells: Sequence[Cell], one: Callable[[int, Cell], results.CellVerdict], at_once: int
) -> list[tuple[Cell, results.CellVerdict]]:
    """``one`` over ``cells``, ``at_once`` at a time; Ctrl-C stops every cell."""
    pool = ThreadPoolExecutor(max_workers=at_once)
    try:
        futures = [pool.submit(one, n, cell) for n, cell in enumerate(cells, 1)]
        pending = set(futures)
        while pending:
            # short slices: Ctrl-C reaches the main thread only while it runs Python
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for f in done:
                f.result()
        return [(cell, f.result()) for cell, f in zip(cells, futures, strict=True)]
    except KeyboardInterrupt:
        _CANCEL.set()  # the other cells stop at their next stage, their results say so
        pool.shutdown(wait=False, cancel_futures=True)
        probe.stop_all()  # the compilers of every cell, not only this thread's
        raise
    finally:
        pool.shutdown(wait=True)
        _CANCEL.clear()


# Set when Ctrl-C stops a run of cells side by side: a cell on another thread (which never
# sees the KeyboardInterrupt) ends at its next stage as if it had been interrupted there.
_CANCEL = threading.Event()


__all__ = ["run_cell", "run_matrix"]
