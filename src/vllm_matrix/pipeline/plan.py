"""The pipeline: one ordered list of stages (``PLAN``), each a small function of the cell's
context. The depths, the long stages and the order everyone else uses come from this list.

A depth names a point in the plan: ``--depth D`` runs every stage up to the last one that
belongs to D (``LAST_STAGE``); a verdict's depth is the last stage whose result counts.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from vllm_matrix.infra import results
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import FAIL, PASS, Finding, StageResult
from vllm_matrix.knowledge import toolchains
from vllm_matrix.pipeline import advice, estimate, reuse
from vllm_matrix.pipeline.context import CellContext, Workspace, need
from vllm_matrix.sources import releases
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import audit, gpu, patches, preflight, probe, toolkit
from vllm_matrix.stages import compile as build
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import facts as facts_mod
from vllm_matrix.stages.compile import carried, handoff, partial
from vllm_matrix.stages.env import fixups
from vllm_matrix.stages.model import modelstage
from vllm_matrix.stages.preflight import modelopt


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[CellContext], StageResult]
    depth: str  # the depth it belongs to
    needs: tuple[str, ...] = ()  # the context's products it reads
    makes: tuple[str, ...] = ()  # the products it leaves in the context
    # Minutes or hours: a result saying "interrupted" is written before it, so a kill -9
    # (which runs no handler) still leaves a valid result naming where it stopped.
    long: bool = False
    compiles: bool = False  # its PASS is evidence from compiling (results.COMPILED)
    # Its FAILs are sorted by classify's side: all of them the machine's (or a gap in a
    # toolkit the tool assembled) make an ERROR, not a fact about vLLM.
    sided: bool = False
    # What a Ctrl-C in it records in its result's details (how far it got).
    interrupted: Callable[[CellContext], dict[str, Any]] | None = None


def do_source(ctx: CellContext) -> StageResult:
    tree = source.get_tree(ctx.cell.source_spec)
    ctx.tree = tree
    return StageResult("source", PASS, 0.0, tree.origin, details={"root": str(tree.root)})


def do_facts(ctx: CellContext) -> StageResult:
    tree = need(ctx.tree)
    f = facts_mod.read_facts(tree.root, tree.version)
    ctx.facts = f
    return StageResult(
        "facts",
        PASS,
        0.0,
        f"torch pin {f.torch}, cutlass {f.cutlass}, cmake ≥ {f.cmake}",
        details=f.to_json(),
    )


def do_preflight(ctx: CellContext) -> StageResult:
    cell, f, root = ctx.cell, need(ctx.facts), need(ctx.tree).root
    know = toolchains.load()
    found = preflight.check(
        cell, f, know, root, ctx.host or preflight.detect_host(), releases.pinned()
    )
    fp8 = modelopt.fp8_column(cell, f, root, audit_dirs(ctx.ws), ctx.previous, know)
    if fp8.unreadable is not None:
        found.append(fp8.unreadable)
    status = preflight.status_of(found)
    details = results.PreflightDetails(
        modelopt_fp8=fp8.column,
        modelopt_evidence=fp8.evidence,
        modelopt_config=fp8.config,
        modelopt_fp8_gemm=[a.to_json() for a in fp8.answers],
    )
    if status == results.PREDICTED_FAIL:
        # the fix is the one advice every command gives (pipeline/advice.py)
        adv = advice.adviser_for(ctx.ws.root).advise(
            advice.Have(cell.torch, cell.cuda, cell.arch, cell.python, cell.vllm)
        )
        details = {"advice": adv.to_json(), **details}  # first, as results have it
    return StageResult(
        "preflight",
        status,
        0.0,
        preflight.summary_of(found),
        tuple(found),
        details=results.as_details(details),
    )


def audit_dirs(ws: Workspace) -> tuple[Path, ...]:
    """Where audited results from any machine are (the ModelOpt FP8 column's evidence):
    this workspace's results/, reports/device/, and reports/fp8gemm/ (FP8 GEMM kernel
    units compiled alone for an arch and audited)."""
    return (ws.results, ws.reports / "device", ws.reports / "fp8gemm")


def do_toolkit(ctx: CellContext) -> StageResult:
    cell = ctx.cell
    log = ctx.logs / "toolkit.log"
    if cell.env == "current":
        tk = toolkit.current_toolkit()
    else:
        tk = toolkit.provide(cell.provider, cell.cuda, log=log)
    ctx.toolkit = tk
    summary = f"nvcc {tk.full_version} ({tk.provider}) at {tk.root}"
    return StageResult("toolkit", PASS, 0.0, summary, details=tk.to_json(), log=str(log))


def do_env(ctx: CellContext) -> StageResult:
    cell = ctx.cell
    log = ctx.logs / "env.log"
    if cell.env == "current":
        tv = env_mod.current_env()
    else:
        # The build imports torch and needs vLLM's build requirements: the full env.
        variant = "full" if ctx.runs("build") else "headers"
        spec, url = env_mod.torch_source(cell)
        tv = env_mod.provide(cell.python, spec, variant, log=log, torch_index=url)
    fx = fixups.compute(need(ctx.toolkit), tv, cell.arch)
    ctx.env, ctx.fixups = tv, fx
    found = tuple(Finding("fixup", "fail", p.message, p.fix) for p in fx.problems)
    summary = f"torch {tv.torch_version} (py{tv.python}, {tv.variant}); {len(fx.items)} fixups"
    details = {"env": tv.to_json(), "fixups": fx.to_json()}
    return StageResult("env", FAIL if found else PASS, 0.0, summary, found, details, str(log))


def do_patches(ctx: CellContext) -> StageResult:
    # A private copy: patched files are copied, the rest hard-linked (the probe only
    # reads the tree; builds make a full copy of their own).
    tree = need(ctx.tree)
    log = ctx.logs / "patches.log"
    chosen = patches.select(patches.load_series(root=ctx.ws.root), tree.version)
    work = ctx.logs / "tree"
    if work.exists():
        shutil.rmtree(work)
    patches.copy_tree(tree.root, work, private=patches.touched(chosen))
    applied = patches.apply_all(work, chosen, log=log, version=tree.version)
    ctx.work_tree, ctx.applied = work, tuple(applied)
    names = ", ".join(f"{a.patch.name} ({a.status})" for a in applied) or "none apply"
    return StageResult(
        "patches",
        PASS,
        0.0,
        names,
        details={"applied": [a.to_json() for a in applied]},
        log=str(log),
    )


def do_probe(ctx: CellContext) -> StageResult:
    if not ctx.opts.probe and ctx.runs("build"):
        return partial.probe_skipped(carried=ctx.opts.built is not None)
    inputs = reuse.probe_inputs(ctx)
    again = reuse.probe_to_reuse(ctx, inputs)
    if again is not None:
        return again
    r = probe.run_probe(
        ctx.cell,
        need(ctx.work_tree),
        need(ctx.facts),
        need(ctx.toolkit),
        need(ctx.env),
        need(ctx.fixups),
        ctx.logs / "probe",
        depth=ctx.opts.probe_depth,
        units_mode=ctx.opts.probe_units,
        front_end_cache=ctx.opts.probe_front_end_cache,
    )
    findings, details = r.findings, r.details | {"inputs": inputs}
    probed = results.probe_details(r.details)
    fe = estimate.front_end_of(
        probed.get("units", []), {"cpus": probed.get("cpus")}, probed.get("cpu_seconds")
    )
    details["estimate"] = _estimate(ctx, fe)
    # --force past a prediction: the probe checks it; say whether they agree.
    pre = next((s for s in ctx.done if s.stage == "preflight"), None)
    note = preflight.prediction_check(pre, r.status)
    if note is not None:
        findings = (*findings, note)
    return StageResult(r.stage, r.status, r.seconds, r.summary, findings, details, r.log)


def _estimate(ctx: CellContext, fe: estimate.FrontEnd | None) -> dict[str, Any]:
    """The build's cost on this machine (pipeline/estimate.py), as result data; a model
    that cannot be evaluated says why and stops nothing."""
    try:
        return estimate.estimate_cell(
            ctx.cell,
            need(ctx.work_tree or (ctx.tree.root if ctx.tree else None)),
            previous=ctx.previous,
            front_end=fe,
            targets=ctx.opts.targets,
            # what the build stage will size with (build_wheel: options, else the cell's)
            jobs=ctx.opts.max_jobs if ctx.opts.max_jobs is not None else ctx.cell.options.max_jobs,
            nvcc_threads=ctx.opts.nvcc_threads
            if ctx.opts.nvcc_threads is not None
            else ctx.cell.options.nvcc_threads,
        )
    except Exception as exc:  # the estimate is advice: never the stage's failure
        return {"error": f"{type(exc).__name__}: {exc}"}


def do_build(ctx: CellContext) -> StageResult:
    cell, opts, tree = ctx.cell, ctx.opts, need(ctx.tree)
    if opts.built is not None:  # compiled on another machine (export-build), checked here
        r, ctx.extensions = carried.take(opts.built, cell, opts.targets)
        return r
    # Before anything compiles: what it will cost here, the MAX_JOBS and why.
    cost = _estimate(ctx, None)
    kind = "partial" if opts.targets and "partial" in cost else "wheel"
    if ctx.echo is not None and kind in cost:
        ctx.echo(estimate.say(cost, kind))
    sources = handoff.sources_for(need(ctx.facts), tree, opts.targets, build.work_dir(cell))
    r = build.build_wheel(
        cell,
        tree,
        need(ctx.toolkit),
        need(ctx.env),
        need(ctx.fixups),
        build.work_dir(cell),
        ctx.ws.dist,
        jobs=opts.max_jobs,
        nvcc_threads=opts.nvcc_threads,
        progress=ctx.echo,
        series=patches.load_series(root=ctx.ws.root),
        clean=opts.clean,
        ccache=opts.ccache,
        ccache_remote=opts.ccache_remote,
        extra_env=sources.env(),
        targets=opts.targets,
    )
    built = cast(results.BuildDetails, r.details)
    if r.status in (PASS, results.WARN) and "wheel" in built:
        ctx.wheel = Path(built["wheel"])
    if r.status in (PASS, results.WARN) and "partial" in built:
        ctx.extensions = [Path(p) for p in built["partial"]["extensions"]]
    return handoff.handed_on(r, sources, cost, tree.version, opts.targets, build.work_dir(cell))


def build_progress(ctx: CellContext) -> dict[str, Any]:
    """How far an interrupted build got; the next run resumes from there."""
    work, targets = build.work_dir(ctx.cell), ctx.opts.targets
    return {"progress": build.progress_of(work, targets) if targets else build.progress_of(work)}


def do_audit(ctx: CellContext) -> StageResult:
    archs = tuple(ctx.cell.arch)
    if ctx.extensions is not None:  # a partial build: its .so files and FP8 GEMM objects
        return partial.audit_partial(
            ctx.extensions, need(ctx.toolkit), archs, ctx.opts.targets, build.work_dir(ctx.cell)
        )
    return audit.audit_wheel(need(ctx.wheel), need(ctx.toolkit), archs)


def do_smoke(ctx: CellContext) -> StageResult:
    if ctx.extensions is not None:  # no wheel to install: load the extensions instead
        return partial.smoke_partial(
            ctx.extensions, need(ctx.env), need(ctx.toolkit), ctx.opts.targets, ctx.logs / "smoke"
        )
    return audit.smoke(need(ctx.wheel), need(ctx.env), need(ctx.toolkit), build.work_dir(ctx.cell))


def do_gpu(ctx: CellContext) -> StageResult:
    exts = ctx.extensions or (
        gpu.wheel_extensions(ctx.wheel, ctx.logs / "gpu" / "wheel") if ctx.wheel is not None else []
    )
    return gpu.run_stage(exts, need(ctx.env), ctx.logs / "gpu", ctx.opts.targets)


def do_model(ctx: CellContext) -> StageResult:
    built = next((s for s in ctx.done if s.stage == "build"), None)
    return modelstage.serve_installable(
        cast(results.BuildDetails, built.details).get("installable") if built else None,
        ctx.logs / "model",
        python=str(need(ctx.env).python_exe),
        echo=ctx.echo,
    )


PLAN: tuple[Stage, ...] = (
    Stage("source", do_source, "preflight", makes=("tree",)),
    Stage("facts", do_facts, "preflight", needs=("tree",), makes=("facts",)),
    Stage("preflight", do_preflight, "preflight", needs=("tree", "facts")),
    Stage("toolkit", do_toolkit, "toolkit", makes=("toolkit",), long=True),
    Stage("env", do_env, "toolkit", needs=("toolkit",), makes=("env", "fixups"), long=True),
    Stage("patches", do_patches, "probe", needs=("tree",), makes=("work_tree", "applied")),
    Stage(
        "probe",
        do_probe,
        "probe",
        needs=("tree", "work_tree", "facts", "toolkit", "env", "fixups", "applied"),
        long=True,
        compiles=True,
        sided=True,
    ),
    Stage(
        "build",
        do_build,
        "build",
        needs=("tree", "facts", "toolkit", "env", "fixups"),
        makes=("wheel", "extensions"),  # one or the other: a wheel, or a partial build's
        long=True,
        compiles=True,
        sided=True,
        interrupted=build_progress,
    ),
    Stage("audit", do_audit, "build", needs=("wheel", "extensions", "toolkit"), compiles=True),
    Stage(
        "smoke",
        do_smoke,
        "build",
        needs=("wheel", "extensions", "env", "toolkit"),
        long=True,
        compiles=True,
    ),
    Stage("gpu", do_gpu, "gpu", needs=("wheel", "extensions", "env"), long=True, compiles=True),
    Stage("model", do_model, "model", needs=("extensions", "env"), long=True, compiles=True),
)
STAGES = {s.name: s for s in PLAN}
# The order and the compiling stages every layer reads (results, classify, the report)
# are these: infra/results.py holds them for the layers that may not import the pipeline.
results.register_plan(tuple(STAGES), tuple(s.name for s in PLAN if s.compiles))

# Depths in plan order, and the stage each ends with.
DEPTHS = tuple(dict.fromkeys(s.depth for s in PLAN))
LAST_STAGE = {d: [s.name for s in PLAN if s.depth == d][-1] for d in DEPTHS}
# The deepest depth that fits on any machine: the probe needs no GPU and minutes per cell.
# The one default of `run`, `release`, `ci-matrix`, `nox -s matrix` and `inv run`.
DEFAULT_DEPTH = "probe"


def check_depth(depth: str) -> None:
    if depth not in DEPTHS:
        from vllm_matrix.infra.tomlfile import did_you_mean

        raise MatrixError(f"unknown depth '{depth}'", fix=did_you_mean(depth, DEPTHS))


def cut(depth: str, stages: Sequence[Stage] = PLAN) -> tuple[Stage, ...]:
    """The plan (``stages``: PLAN, or one like it) up to ``depth``: the stages a run to
    that depth walks."""
    check_depth(depth)
    last = max(n for n, s in enumerate(stages) if s.depth == depth)
    return tuple(stages[: last + 1])


__all__ = [
    "DEFAULT_DEPTH",
    "DEPTHS",
    "LAST_STAGE",
    "PLAN",
    "STAGES",
    "Stage",
    "check_depth",
    "cut",
]
