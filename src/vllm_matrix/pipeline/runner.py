"""Run cells stage by stage up to a depth; write one result file per cell.

A stage runs only if the earlier ones allow it. Ctrl-C leaves a valid result
(the running stage marked interrupted) and re-raises.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import errors, portable, results
from vllm_matrix.infra.config import Cell, Matrix
from vllm_matrix.infra.errors import MatrixError, NotAvailable
from vllm_matrix.infra.results import ERROR, FAIL, INTERRUPTED, PASS, SKIP, Finding, StageResult
from vllm_matrix.knowledge import classify, pins, probe_units
from vllm_matrix.knowledge import toolchains as knowledge
from vllm_matrix.stages import (
    audit,
    build,
    externals,
    fixups,
    gpu,
    modelopt,
    partial,
    patches,
    preflight,
    probe,
    source,
    toolkit,
)
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import facts as facts_mod

# Depths in order; later issues plug their stages in here.
DEPTHS = ("preflight", "toolkit", "probe", "build", "gpu")
# The deepest depth that fits on any machine: the probe needs no GPU and minutes per cell.
DEFAULT_DEPTH = "probe"
LAST_STAGE = {
    "preflight": "preflight",
    "toolkit": "env",
    "probe": "probe",
    "build": "smoke",
    "gpu": "gpu",
}
# Stages that take minutes or hours: a result saying "interrupted" is written before each,
# so a kill -9 (which runs no handler) still leaves a valid result naming where it stopped.
LONG_STAGES = ("toolkit", "env", "probe", "build", "smoke", "gpu")


@dataclass(frozen=True)
class BuildOptions:
    """What `run --depth build` takes beyond the cell (None: the cell's options, else sized)."""

    max_jobs: int | None = None
    nvcc_threads: int | None = None
    clean: bool = False  # remake the work copy: a from-scratch build
    ccache: bool = True
    debug: bool = False  # let a bug's exception through (traceback) instead of an ERROR
    # ccache's remote storage (build.remote_setting: VLLM_MATRIX_CCACHE_REMOTE or the
    # matrix's [ccache] remote); None: the local cache only
    ccache_remote: str | None = None
    targets: tuple[str, ...] = ()  # CMake targets: a partial build (no wheel); () = all
    probe: bool = True  # False: --no-probe (the build compiles the probe's units anyway)
    probe_units: str = "selected"  # probe.UNITS_MODES: "all" sweeps every unit


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    def logs(self, cell: Cell) -> Path:
        return self.results / "logs" / cell.id


def check_depth(depth: str) -> None:
    if depth not in DEPTHS:
        from vllm_matrix.infra.tomlfile import did_you_mean

        raise MatrixError(f"unknown depth '{depth}'", fix=did_you_mean(depth, DEPTHS))


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
    stage: str, fn: Callable[[], StageResult], debug: bool = False, tool_made: bool = True
) -> StageResult:
    """Run one stage. A stage says FAIL itself (a compile failed, a rule objects); an
    exception out of a stage is the tool's or the machine's failure: ERROR, never FAIL."""
    t0 = time.monotonic()
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
    if r.status == FAIL and r.stage in ("probe", "build"):
        r = _tool_side(r, tool_made)
    return StageResult(
        r.stage, r.status, round(time.monotonic() - t0, 3), r.summary, r.findings, r.details, r.log
    )


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
    depth: str = DEFAULT_DEPTH,
    mach: dict[str, Any] | None = None,
    force: bool = False,
    echo: Callable[[str], None] | None = None,
    opts: BuildOptions = BuildOptions(),
    host: preflight.Host | None = None,
) -> list[StageResult]:
    """Stages up to ``depth``; a stage that fails/skips stops the cell, except that
    ``force`` goes on past a predicted failure (to check the prediction). ``host`` and
    ``mach`` are the machine's facts (detected when None; tests pass fixed ones)."""
    stages: list[StageResult] = []
    state: dict[str, Any] = {}
    previous = _previous(ws, cell)  # read before this run's first write replaces it
    mach = mach or results.machine()
    current = "source"
    tool_made = cell.env != "current" and cell.provider in TOOL_MADE

    def do_source() -> StageResult:
        tree = source.get_tree(cell.source_spec)
        state["tree"] = tree
        return StageResult("source", PASS, 0.0, tree.origin, details={"root": str(tree.root)})

    def do_facts() -> StageResult:
        f = facts_mod.read_facts(state["tree"].root, state["tree"].version)
        state["facts"] = f
        return StageResult(
            "facts",
            PASS,
            0.0,
            f"torch pin {f.torch}, cutlass {f.cutlass}, cmake ≥ {f.cmake}",
            details=f.to_json(),
        )

    def do_preflight() -> StageResult:
        f = state["facts"]
        know = knowledge.load()
        found = preflight.check(
            cell, f, know, state["tree"].root, host or preflight.detect_host(), pins.load()
        )
        column, evidence = preflight.modelopt_column(cell, f)
        # The column rests on the release's own parser run on a ModelOpt FP8 config.
        cfg = modelopt.check(state["tree"].root, modelopt.EXAMPLE)
        return StageResult(
            "preflight",
            preflight.status_of(found),
            0.0,
            preflight.summary_of(found),
            tuple(found),
            details={
                "modelopt_fp8": column
                if cfg.accepted or not f.modelopt.supported
                else f"no: {cfg.message}",
                "modelopt_evidence": f"{evidence}; hf_quant_config.json FP8: {cfg.message} "
                f"({cfg.how})",
                "modelopt_config": cfg.to_json(),
            },
        )

    def do_toolkit() -> StageResult:
        log = ws.logs(cell) / "toolkit.log"
        if cell.env == "current":
            tk = toolkit.current_toolkit()
        else:
            tk = toolkit.provide(cell.provider, cell.cuda, log=log)
        state["toolkit"] = tk
        summary = f"nvcc {tk.full_version} ({tk.provider}) at {tk.root}"
        return StageResult("toolkit", PASS, 0.0, summary, details=tk.to_json(), log=str(log))

    def do_env() -> StageResult:
        log = ws.logs(cell) / "env.log"
        if cell.env == "current":
            tv = env_mod.current_env()
        else:
            # The build imports torch and needs vLLM's build requirements: the full env.
            variant = "full" if depth in ("build", "gpu") else "headers"
            spec, url = torch_source(cell)
            tv = env_mod.provide(cell.python, spec, variant, log=log, torch_index=url)
        fx = fixups.compute(state["toolkit"], tv, cell.arch)
        state["env"], state["fixups"] = tv, fx
        found = tuple(Finding("fixup", "fail", p.message, p.fix) for p in fx.problems)
        summary = f"torch {tv.torch_version} (py{tv.python}, {tv.variant}); {len(fx.items)} fixups"
        details = {"env": tv.to_json(), "fixups": fx.to_json()}
        return StageResult("env", FAIL if found else PASS, 0.0, summary, found, details, str(log))

    def do_patches() -> StageResult:
        # A private copy: patched files are copied, the rest hard-linked (the probe only
        # reads the tree; builds make a full copy of their own).
        log = ws.logs(cell) / "patches.log"
        chosen = patches.select(patches.load_series(root=ws.root), state["tree"].version)
        work = ws.logs(cell) / "tree"
        if work.exists():
            shutil.rmtree(work)
        patches.copy_tree(state["tree"].root, work, private=patches.touched(chosen))
        applied = patches.apply_all(work, chosen, log=log, version=state["tree"].version)
        state["work_tree"] = work
        names = ", ".join(f"{a.patch.name} ({a.status})" for a in applied) or "none apply"
        return StageResult(
            "patches",
            PASS,
            0.0,
            names,
            details={"applied": [a.to_json() for a in applied]},
            log=str(log),
        )

    def do_probe() -> StageResult:
        if not opts.probe and depth in ("build", "gpu"):
            return partial.probe_skipped()
        if depth in ("build", "gpu"):
            # A build reruns after a stop; the probe that passed for the same inputs
            # (source, toolkit, torch, patches) minutes or hours ago still holds.
            again = _passed_probe(previous, stages)
            if again is not None:
                return again
        r = probe.run_probe(
            cell,
            state["work_tree"],
            state["facts"],
            state["toolkit"],
            state["env"],
            state["fixups"],
            ws.logs(cell) / "probe",
            units_mode=opts.probe_units,
        )
        pre = next((s for s in stages if s.stage == "preflight"), None)
        if pre is not None and pre.status == results.PREDICTED_FAIL:
            # --force: the probe checks the prediction; say whether they agree.
            agree = r.status == FAIL
            note = Finding(
                "prediction-check",
                "info" if agree else "warn",
                "preflight predicted failure; the probe "
                + ("agrees" if agree else "compiled the units it chose without error"),
                "" if agree else "the probe cannot see every unit: check the rule",
                tuple(f.rule for f in pre.findings if f.level == "fail"),
            )
            r = StageResult(
                r.stage, r.status, r.seconds, r.summary, (*r.findings, note), r.details, r.log
            )
        return r

    def do_build() -> StageResult:
        # The FetchContent sources come from the cache (inv prefetch) or PyPI; a missing
        # one stops the build here, before anything compiles, saying how to bring it.
        know = probe_units.load_knowledge()
        dirs, standins = partial.externals_for(
            state["facts"], know, state["tree"].root, opts.targets, build.work_dir(cell)
        )
        missing = externals.missing_error(state["tree"].version, dirs)
        if missing is not None:
            raise NotAvailable(missing.message, fix=missing.fix)
        r = build.build_wheel(
            cell,
            state["tree"],
            state["toolkit"],
            state["env"],
            state["fixups"],
            build.work_dir(cell),
            ws.dist,
            jobs=opts.max_jobs,
            nvcc_threads=opts.nvcc_threads,
            progress=echo,
            series=patches.load_series(root=ws.root),
            clean=opts.clean,
            ccache=opts.ccache,
            ccache_remote=opts.ccache_remote,
            extra_env=externals.build_env(dirs) | {v: str(p) for p, v in standins.values()},
            targets=opts.targets,
        )
        if r.status in (PASS, results.WARN) and "wheel" in r.details:
            state["wheel"] = Path(r.details["wheel"])
        if r.status in (PASS, results.WARN) and "partial" in r.details:
            state["extensions"] = [Path(p) for p in r.details["partial"]["extensions"]]
        sources = {
            k: {"pin": d.pin, "path": str(d.path), "origin": d.origin} for k, d in dirs.items()
        }
        details = r.details | {"sources": sources}
        if standins:
            details["standins"] = {k: str(p) for k, (p, _) in standins.items()}
        return StageResult(r.stage, r.status, r.seconds, r.summary, r.findings, details, r.log)

    def do_audit() -> StageResult:
        if "extensions" in state:  # a partial build: its .so files and FP8 GEMM objects
            return partial.audit_partial(
                state["extensions"],
                state["toolkit"],
                tuple(cell.arch),
                opts.targets,
                build.work_dir(cell),
            )
        return audit.audit_wheel(state["wheel"], state["toolkit"], tuple(cell.arch))

    def do_smoke() -> StageResult:
        if "extensions" in state:  # no wheel to install: load the extensions instead
            return partial.smoke_partial(
                state["extensions"], state["env"], opts.targets, ws.logs(cell) / "smoke"
            )
        return audit.smoke(state["wheel"], state["env"], state["toolkit"], build.work_dir(cell))

    def do_gpu() -> StageResult:
        exts = state.get("extensions") or (
            gpu.wheel_extensions(state["wheel"], ws.logs(cell) / "gpu" / "wheel")
            if "wheel" in state
            else []
        )
        return gpu.run_stage(exts, state["env"], ws.logs(cell) / "gpu", opts.targets)

    plan: list[tuple[str, Callable[[], StageResult]]] = [
        ("source", do_source),
        ("facts", do_facts),
        ("preflight", do_preflight),
        ("toolkit", do_toolkit),
        ("env", do_env),
        ("patches", do_patches),
        ("probe", do_probe),
        ("build", do_build),
        ("audit", do_audit),
        ("smoke", do_smoke),
        ("gpu", do_gpu),
    ]
    last = LAST_STAGE[depth]
    try:
        for name, fn in plan:
            current = name
            if name in LONG_STAGES:
                if echo is not None:  # what the progress lines below belong to
                    echo(f"{cell.id}: {name}")
                placeholder = StageResult(
                    name,
                    INTERRUPTED,
                    0.0,
                    f"started {time.strftime('%Y-%m-%d %H:%M:%S')} by pid {os.getpid()} and "
                    "did not finish (killed, or still running)",
                )
                results.write(ws.results, cell, [*stages, placeholder], mach)
            r = _timed(name, fn, opts.debug, tool_made)
            stages.append(r)
            go_on = r.status in (PASS, results.WARN) or (
                force and r.status == results.PREDICTED_FAIL
            )
            if not go_on or name == last:
                break
    except KeyboardInterrupt:
        details: dict[str, Any] = {}
        if current == "build":  # how far it got; the next run resumes from there
            work = build.work_dir(cell)
            details["progress"] = (
                build.progress_of(work, opts.targets) if opts.targets else build.progress_of(work)
            )
        stages.append(StageResult(current, INTERRUPTED, 0.0, "interrupted (Ctrl-C)", (), details))
        results.write(ws.results, cell, stages, mach)
        raise
    stages = _keep_deeper(previous, stages)
    results.write(ws.results, cell, stages, mach)
    return stages


def torch_source(cell: Cell) -> tuple[str, str | None]:
    """(what to install, the variant index to take it from) for the cell's torch.

    A bare version comes from pip's index. A variant comes from its configured index; with
    none configured, it is the index's default wheel when that wheel is that variant
    (PyPI's 2.6.0 is +cu124), else it cannot be had here: NotAvailable (SKIPPED).
    """
    variant = cell.torch_variant
    if variant is None:
        return cell.torch, None
    found = cell.torch_index_url()
    if found is None:
        default = knowledge.load().torch.get(cell.torch_version)
        if default is not None and default.local == variant:
            return cell.torch_version, None
        from vllm_matrix.stages.torchwheel import variant_index

        variant_index(variant, dict(cell.torch_index))  # raises NotAvailable with the fix
        raise AssertionError("unreachable")  # pragma: no cover
    url, where = found
    try:
        from vllm_matrix.infra import index

        have = {str(f.version) for f in index.project_files("torch", url)}
    except MatrixError as exc:
        raise NotAvailable(
            f"torch {cell.torch}: the {variant} index configured by {where} cannot be read: "
            f"{exc.message}",
            fix=f"check {where} and the network; preflight's verdict still stands",
        ) from exc
    if cell.torch not in have:
        raise NotAvailable(
            f"torch {cell.torch} is not on the {variant} index configured by {where}",
            fix=f"pick a torch release that index serves, or fix {where}",
        )
    return cell.torch, url


# Stages whose summaries name the probe's inputs (source sha, nvcc, torch, patches).
PROBE_INPUTS = ("source", "toolkit", "env", "patches")


def _previous(ws: Workspace, cell: Cell) -> dict[str, Any] | None:
    try:
        return results.read(ws.results / f"{cell.id}.json")
    except (OSError, ValueError, KeyError):
        return None


def _passed_probe(d: dict[str, Any] | None, stages: list[StageResult]) -> StageResult | None:
    """The earlier run's passing probe of this cell, if it ran on the same inputs."""
    if d is None:
        return None
    prev = [StageResult.from_json(s) for s in d["stages"]]
    old_probe = next((s for s in prev if s.stage == "probe"), None)
    if old_probe is None or old_probe.status != PASS:
        return None

    def inputs(ss: list[StageResult]) -> list[tuple[str, str]]:
        # The env's torch and Python, not its variant: the headers a probe reads are the
        # same in the "headers" env and in the build's "full" env.
        # Compared as written (results hold portable paths: $VLLM_MATRIX_CACHE/...).
        return [
            (s.stage, portable.text(s.summary.split(", ")[0] if s.stage == "env" else s.summary))
            for s in ss
            if s.stage in PROBE_INPUTS
        ]

    if inputs(prev) != inputs(stages):
        return None
    return StageResult(
        "probe",
        PASS,
        old_probe.seconds,
        f"{old_probe.summary.split(' (reused: ')[0]} (reused: passed on the same inputs, "
        f"{old_probe.details.get('reused_from', d['written'])})",
        old_probe.findings,
        old_probe.details | {"reused_from": old_probe.details.get("reused_from", d["written"])},
        old_probe.log,
    )


def _keep_deeper(d: dict[str, Any] | None, stages: list[StageResult]) -> list[StageResult]:
    """A shallower rerun must not erase what a deeper run found: when every stage of this
    run came out as before, the earlier run's deeper stages (``d``: the result as it was
    before this run wrote its first placeholder) are kept."""
    if d is None:
        return stages
    prev = [StageResult.from_json(s) for s in d["stages"]]
    same = [(s.stage, s.status) for s in stages] == [
        (s.stage, s.status) for s in prev[: len(stages)]
    ]
    return stages + prev[len(stages) :] if same and len(prev) > len(stages) else stages


def run_matrix(
    matrix: Matrix,
    ws: Workspace,
    depth: str = DEFAULT_DEPTH,
    select: str | None = None,
    echo: Callable[[str], None] | None = None,
    force: bool = False,
    opts: BuildOptions = BuildOptions(),
    host: preflight.Host | None = None,
    mach: dict[str, Any] | None = None,
) -> list[tuple[Cell, results.Verdict]]:
    check_depth(depth)
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    cells = matrix.select(select)
    mach = mach or results.machine()
    out = []
    for n, cell in enumerate(cells, 1):
        t0 = time.monotonic()
        stages = run_cell(cell, ws, depth, mach, force, echo, opts, host)
        v = results.verdict_of(stages)
        echo(
            f"[{n}/{len(cells)}] {cell.id}: {v.verdict} at {v.depth} ({time.monotonic() - t0:.1f}s)"
        )
        out.append((cell, v))
    return out


__all__ = ["DEPTHS", "SKIP", "BuildOptions", "Workspace", "check_depth", "run_cell", "run_matrix"]
