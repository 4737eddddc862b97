"""The probe stage: select units, compile them to the chosen depth, report per unit."""

from __future__ import annotations

import json
import re
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from vllm_matrix.cmake.model import CUDA_SUFFIXES, BuildModel
from vllm_matrix.infra import progress, tomlfile
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.host import cpu_count, loadavg
from vllm_matrix.infra.results import FAIL, PASS, WARN, Finding, StageResult, Status
from vllm_matrix.knowledge import classify, probe_units
from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.sources.externals import ExternalDir, external_dir
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.env.fixups import Fixups
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.preflight.apiscan import ApiHit
from vllm_matrix.stages.probe import frontcache, unity
from vllm_matrix.stages.probe.configure import build_model
from vllm_matrix.stages.probe.explain import explain_flags, lowest_gencode
from vllm_matrix.stages.probe.includes import GENERATED, include_closure
from vllm_matrix.stages.probe.resources import job_limit, mem_available_gib
from vllm_matrix.stages.probe.runner import UnitResult, UnitRunner, first_error, run_all, unit_label
from vllm_matrix.stages.probe.torchflags import torch_flags
from vllm_matrix.stages.probe.units import Selection, Unit, search_dirs, select, unit_archs
from vllm_matrix.stages.toolkit import Toolkit

PROBE_DEPTHS = ("auto", "front-end", "codegen")
UNIT_TIMEOUT_S = 20 * 60


def _classify(log: Path) -> tuple[Finding, str, str | None]:
    """classify's finding for a failed unit log, a short label, and the quoted line."""
    c = classify.classify_file(log)
    line = c.line.strip() or None
    m = re.search(r'(?:has no member|is not a member of|identifier) "?\'?([A-Za-z_][\w:]*)', c.line)
    if m:
        label = m.group(1).split("::")[-1]
    elif c.signature is not None:
        label = c.signature.id
    else:
        em = re.search(r"error\s*:\s*(.{1,60})", c.line)
        label = em.group(1).strip() if em else "unknown error"
    return c.to_finding(log), label, line


def run_probe(
    cell: Cell,
    tree: Path,
    facts: SourceFacts,
    tk: Toolkit,
    tv: TorchEnv,
    fx: Fixups,
    work: Path,
    *,
    depth: str = "auto",
    jobs: int | None = None,
    budget_s: float = 180.0,
    api_hits: Sequence[ApiHit] | None = None,
    timeout_s: float = UNIT_TIMEOUT_S,
    only: Sequence[str] | None = None,
    front_end_cache: bool = True,
    units_mode: str = "selected",
) -> StageResult:
    """Compile the cell's deciding units; one StageResult with a row per unit.

    ``only`` restricts the run to those unit paths (measurements, debugging).
    """
    _check_modes(depth, units_mode)
    t_start = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    know = probe_units.load_knowledge()
    archs = tuple(cell.arch)
    work.mkdir(parents=True, exist_ok=True)
    fe_cache = frontcache.FrontEndCache(tk.full_version) if front_end_cache else None
    if api_hits is None:
        api_hits = _scan_api(tree)
    ext_dirs = _externals(facts, know)
    fetch_dirs = {k: v.path for k, v in ext_dirs.items() if v.path is not None}
    tfl = torch_flags(tv)
    model = build_model(tree, tk.full_version, archs, tfl, cell.python, fetch_dirs, know)
    sel = select(tree, facts, archs, tk.full_version, api_hits, model, know)
    units = _units_to_run(sel, tree, model, know, only, units_mode)
    ctx = _Context(tree, facts, tk, tv, archs, know, model, ext_dirs, fetch_dirs)
    results, runners = _prepare_units(ctx, units, fx.env(), work, timeout_s, fe_cache)
    n_jobs = _first_pass(
        cell,
        runners,
        depth,
        jobs,
        know,
        lambda src: [
            tree / f for f in include_closure(tree, src, search_dirs(model, tree, src), know)[0]
        ],
    )
    codegen_jobs = 0
    # the sweep ("all") stops at the front end: what the selection is measured against
    if depth == "auto" and units_mode == "selected":
        codegen_jobs = _codegen_pass(cell, runners, jobs, budget_s, t_start, know)
    findings, failed = _findings(results, model, archs, tk, know)
    summary, status, deepest = _summary(results, failed)
    details: dict[str, Any] = {
        "depth": deepest,
        "requested_depth": depth,
        "jobs": n_jobs,
        "codegen_jobs": codegen_jobs,
        **_measurements(t_start, cpu0, budget_s),
        "units_cpu_seconds": round(sum(r.cpu_s for r in results), 1),
        "front_end_cache": {
            "enabled": fe_cache is not None,
            "hits": sum(1 for r in results if r.front_end_cache == "hit"),
            "misses": sum(1 for r in results if r.front_end_cache == "miss"),
            "key": "sha256 of the preprocessed unit (tree/work paths normalised), cudafe++ "
            "argv, nvcc version",
        },
        "units": [r.to_json() for r in results],
        "families": list(sel.families),
        "api_hits_not_built": list(sel.not_built),
        "generated_sources": list(model.empty_globs),
        "external_projects_not_probed": list(model.skipped_includes),
        "externals": {
            k: {"pin": v.pin, "path": str(v.path) if v.path else None, "origin": v.origin}
            for k, v in ext_dirs.items()
        },
        "cuda_archs": list(model.cuda_archs),
        "notes": list(model.notes),
    }
    summary_log = work / "probe.log"
    atomic_write_text(summary_log, _render_log(summary, results, details))
    return StageResult(
        "probe",
        status,
        round(time.monotonic() - t_start, 1),
        summary,
        tuple(findings),
        details,
        str(summary_log),
    )


def _check_modes(depth: str, units_mode: str) -> None:
    if depth not in PROBE_DEPTHS:
        raise MatrixError(
            f"unknown probe depth '{depth}'", fix=tomlfile.did_you_mean(depth, PROBE_DEPTHS)
        )
    if units_mode not in UNITS_MODES:
        raise MatrixError(
            f"unknown probe units mode '{units_mode}'",
            fix=tomlfile.did_you_mean(units_mode, UNITS_MODES),
        )


def _scan_api(tree: Path) -> list[ApiHit]:
    from vllm_matrix.knowledge import toolchains
    from vllm_matrix.stages.preflight import apiscan

    return apiscan.scan(tree, toolchains.load().api)


def _externals(facts: SourceFacts, know: ProbeKnowledge) -> dict[str, ExternalDir]:
    """The tree's pins, from the override variable or PyPI (checksum-verified)."""
    ext_dirs: dict[str, ExternalDir] = {}
    for e in know.externals:
        if any(x.name == e.name for x in facts.external):
            ext_dirs[e.name] = external_dir(facts, e.name, know, fetch=True)
    return ext_dirs


def _units_to_run(
    sel: Selection,
    tree: Path,
    model: BuildModel,
    know: ProbeKnowledge,
    only: Sequence[str] | None,
    units_mode: str,
) -> list[Unit]:
    """The selection, or ``only`` (requested paths; every built unit for units_mode "all")."""
    if units_mode == "all":  # every unit the build compiles (the accuracy study's sweep)
        only = model.built_sources()
    units = [u for u in sel.units if only is None or u.path in only]
    if only:
        known = {u.path for u in units}
        for p in only:
            if p not in known:
                kind = "cuda" if p.endswith(CUDA_SUFFIXES) else "cxx"
                fam = model.family_of(p)
                t = model.target_of(p)
                needs = include_closure(tree, p, search_dirs(model, tree, p), know)[1]
                units.append(
                    Unit(
                        p,
                        "all" if units_mode == "all" else "requested",
                        kind,
                        tuple(sorted(needs)),
                        fam.name if fam else "",
                        fam.gated if fam else False,
                        t.name if t else "",
                        unit_archs(model, p),
                    )
                )
    return units


@dataclass(frozen=True)
class _Context:
    """What the units are compiled against: the tree, its toolchain and its evaluated CMake."""

    tree: Path
    facts: SourceFacts
    tk: Toolkit
    tv: TorchEnv
    archs: tuple[str, ...]
    know: ProbeKnowledge
    model: BuildModel
    ext_dirs: dict[str, ExternalDir]
    fetch_dirs: dict[str, Path]


def _prepare_units(
    ctx: _Context,
    units: Sequence[Unit],
    env: dict[str, str],
    work: Path,
    timeout_s: float,
    fe_cache: frontcache.FrontEndCache | None,
) -> tuple[list[UnitResult], list[tuple[UnitRunner, UnitResult]]]:
    """A result row per unit; a runner (flags explained in its log) per unit that can run:
    one needing a generated header or an absent external is "not-probed" instead."""
    tree, facts, model, know = ctx.tree, ctx.facts, ctx.model, ctx.know
    results: list[UnitResult] = []
    runners: list[tuple[UnitRunner, UnitResult]] = []
    for u in units:
        res = UnitResult(u)
        results.append(res)
        missing = [n for n in u.needs if n not in ctx.fetch_dirs]
        if GENERATED in missing:
            # A header the build writes (a code generator run from CMake): the probe does
            # not run generators, so the unit cannot be compiled here; not a failure.
            why = include_closure(tree, u.path, search_dirs(model, tree, u.path), know)[1]
            res.status = "not-probed"
            res.note = f"not probed: needs a generated file ({why.get(GENERATED, '?')})"
            continue
        if missing:
            ed = ctx.ext_dirs.get(missing[0])
            pin = ed.pin if ed else None
            var = next((x.env_var for x in facts.external if x.name == missing[0]), None)
            res.status = "not-probed"
            res.note = (
                f"not probed: needs {missing[0]}"
                + (f" {pin}" if pin else "")
                + f" ({var or 'its *_SRC_DIR'})"
                + (f": {ed.origin}" if ed else "")
            )
            continue
        explained = explain_flags(
            u, tree, ctx.tk, ctx.tv, ctx.archs, facts, model=model, fetch_dirs=ctx.fetch_dirs
        )
        r = UnitRunner(u, [f for f, _ in explained], tree, ctx.tk, env, work, timeout_s)
        r.fe_cache = fe_cache
        r.log.parent.mkdir(parents=True, exist_ok=True)
        res.log = str(r.log)
        _write_flag_notes(r.log, explained)  # starts the log afresh
        runners.append((r, res))
    return results, runners


def _first_pass(
    cell: Cell,
    runners: Sequence[tuple[UnitRunner, UnitResult]],
    depth: str,
    jobs: int | None,
    know: ProbeKnowledge,
    closure: Callable[[str], Iterable[Path]] = lambda src: (),
) -> int:
    """Every unit to the front end (depth codegen: CUDA units through codegen for their
    lowest arch); returns the number run at a time. Front ends that can share a translation
    unit run in one (unity.py); what a verdict depends on runs first."""
    first_depth = "codegen" if depth == "codegen" else "front-end"
    n_jobs = job_limit(know.codegen_gib if depth == "codegen" else know.front_end_gib, jobs)
    work, plans = _jobs(cell, runners, first_depth, closure)

    def phase1(job: unity.Job) -> list[unity.Job] | None:
        if job.group is not None:
            return unity.run_group(job, plans)
        r, res = job.items[0]
        if depth == "codegen" and r.u.kind == "cuda":
            r.run("codegen", res, lowest_gencode(r.flags))
        else:
            r.run(first_depth, res)
        return None

    with progress.Progress(
        f"probing vLLM {cell.vllm} ({first_depth}, {n_jobs} at a time)", len(runners), "units"
    ) as bar:

        def each(job: unity.Job) -> list[unity.Job] | None:
            label = job.label()
            bar.start(label)
            more = None
            try:
                more = phase1(job)
                return more
            finally:
                bar.finish(label, advance=0 if more else len(job.items))

        run_all(each, work, n_jobs)
    return n_jobs


def _predicted_fail(cell: Cell, u: Unit) -> bool:
    """The API scan found a torch symbol in the unit that the cell's torch predates."""
    try:
        have = Version(cell.torch.split("+")[0])
        return any(have < Version(t) for t in u.api_torch)
    except InvalidVersion:
        return False


def _jobs(
    cell: Cell,
    runners: Sequence[tuple[UnitRunner, UnitResult]],
    first_depth: str,
    closure: Callable[[str], Iterable[Path]],
) -> tuple[list[unity.Job], dict[int, unity.Plan]]:
    """The first pass's jobs, in the order the verdict depends on them: units predicted to
    fail (the API scan's torch symbols the cell's torch lacks; nvcc refusing the unit's
    arches) alone and first, then jobs holding a unit the API scan flagged, then the rest;
    costly jobs (a shared front end, the bindings) before cheap ones."""
    plans: dict[int, unity.Plan] = {}
    first: set[int] = set()
    for r, _ in runners:
        if r.u.kind != "cuda" or first_depth != "front-end":
            continue
        if _predicted_fail(cell, r.u):
            first.add(id(r))
            continue
        steps, nvcc_env = r.dryrun(r.flags, log=False)
        if not steps:
            first.add(id(r))
            continue
        p = unity.plan(r.tree / r.u.path, r.keep, r.flags, steps, nvcc_env, closure(r.u.path))
        if p is not None:
            plans[id(r)] = p

    def rank(job: unity.Job) -> tuple[int, float]:
        ids = [id(r) for r, _ in job.items]
        if any(i in first for i in ids):
            cls = 0
        elif any("API scan" in r.u.why for r, _ in job.items):
            cls = 1
        else:
            cls = 2
        u = job.items[0][0].u
        cost = (
            1.0 + 0.1 * len(job.items)
            if job.group is not None
            else (1.0 if u.kind == "cuda" else 0.5 if u.why.startswith("bindings") else 0.1)
        )
        return cls, -cost

    return sorted(unity.jobs_for(runners, plans), key=rank), plans


def _codegen_pass(
    cell: Cell,
    runners: Sequence[tuple[UnitRunner, UnitResult]],
    jobs: int | None,
    budget_s: float,
    t_start: float,
    know: ProbeKnowledge,
) -> int:
    """Depth auto: code generation for the lowest arch of arch-gated units that passed their
    front end, cheapest first, while the estimate fits the rest of the budget; returns the
    number run at a time (0: none)."""
    elapsed = time.monotonic() - t_start
    left = budget_s - elapsed
    cands = sorted(
        (
            (r, res)
            for r, res in runners
            if res.status == "pass" and r.u.gated and r.u.kind == "cuda"
        ),
        key=lambda it: it[1].front_end_s,
    )
    plan: list[tuple[UnitRunner, UnitResult]] = []
    cg_jobs = job_limit(know.codegen_gib, jobs)
    total = 0.0
    for r, res in cands:
        est = know.codegen_per_front_end * res.front_end_s
        if (total + est) / cg_jobs <= left:
            total += est
            plan.append((r, res))
        else:
            res.note = (
                f"codegen skipped: estimated {est:.0f}s "
                f"({know.codegen_per_front_end:g} x front end) exceeds the "
                f"{max(left, 0):.0f}s left of the {budget_s:.0f}s budget"
            )
    codegen_jobs = cg_jobs if plan else 0

    # The estimate can be far off (cicc on CUTLASS kernels for sm_120 ran for many
    # minutes on 16 cores): the budget is a deadline. A unit still in code generation
    # then keeps its front-end pass.
    deadline = t_start + budget_s

    def phase2(item: tuple[UnitRunner, UnitResult]) -> None:
        r, res = item
        res.status = "not-run"
        r.timeout_s = res.seconds + max(deadline - time.monotonic(), 1.0)
        r.run("codegen", res, lowest_gencode(r.flags), pass_="codegen-pass")
        if res.status == "timeout":
            res.status, res.depth = "pass", "front-end"
            res.note = (
                f"code generation stopped at the {budget_s:.0f}s budget after "
                f"{res.codegen_s:.0f}s (the front end passed)"
            )

    if plan:
        with progress.Progress(
            f"probing vLLM {cell.vllm} (code generation, {cg_jobs} at a time)",
            len(plan),
            "units",
        ) as bar:
            run_all(bar.each(phase2, unit_label), plan, cg_jobs)
    return codegen_jobs


def _findings(
    results: Sequence[UnitResult],
    model: BuildModel,
    archs: tuple[str, ...],
    tk: Toolkit,
    know: ProbeKnowledge,
) -> tuple[list[Finding], list[tuple[UnitResult, str]]]:
    """A finding per failed, timed-out or not-probed unit, then the configuration's own
    warnings; and the failed units with their short labels."""
    findings: list[Finding] = []
    failed: list[tuple[UnitResult, str]] = []
    for res in results:
        if res.status == "fail":
            f, label, line = _classify(Path(res.log))
            res.first_error = line or first_error(Path(res.log))
            res.finding = f
            findings.append(f)
            failed.append((res, label))
        elif res.status == "timeout":
            res.first_error = None
            findings.append(
                Finding(
                    "probe-timeout",
                    "warn",
                    f"{res.unit.path}: {res.note or 'timed out'}",
                    fix="raise the unit timeout or probe on a bigger machine",
                    evidence=(res.log,),
                )
            )
        elif res.status == "not-probed":
            findings.append(
                Finding(
                    "probe-not-probed",
                    "info",
                    f"{res.unit.path}: {res.note}",
                    fix="only a full build compiles it (its generator runs at configure time)"
                    if GENERATED in res.unit.needs
                    else "set the dependency's *_SRC_DIR to a checkout at the pin",
                    source=next((e.source for e in know.externals if e.name in res.unit.needs), ""),
                )
            )
    if not model.cuda_archs:
        findings.append(
            Finding(
                "probe-no-arch",
                "warn",
                f"the tree builds none of the cell's arches {', '.join(archs)} with nvcc "
                f"{tk.full_version} (its CUDA_SUPPORTED_ARCHS for this nvcc leave nothing): "
                "units compile for nvcc's default arch only",
                fix="pick an arch the tree supports, or a newer toolkit",
            )
        )
    for msg in model.fatal:
        findings.append(
            Finding(
                "probe-configure",
                "warn",
                f"the tree's CMake stops for this cell: {msg}",
                evidence=(msg.split(": ", 1)[0],),
            )
        )
    return findings, failed


def _summary(
    results: Sequence[UnitResult], failed: Sequence[tuple[UnitResult, str]]
) -> tuple[str, Status, str]:
    """The stage's one-line summary, its status, and the deepest depth any unit reached."""
    probed = [r for r in results if r.status in ("pass", "fail", "timeout")]
    deepest = (
        "codegen"
        if any(r.depth == "codegen" for r in probed)
        else ("front-end" if probed else "none")
    )
    n_cg = sum(1 for r in probed if r.depth == "codegen")
    depth_label = (
        deepest
        if deepest != "codegen" or n_cg == len(probed)
        else (f"front-end ({n_cg} also codegen)")
    )
    summary = f"{len(probed)} units, {depth_label}"
    if failed:
        summary += f", {len(failed)} failed: " + ", ".join(
            f"{Path(r.unit.path).name} ({cause})" for r, cause in failed
        )
    else:
        n_pass = sum(1 for r in probed if r.status == "pass")
        if probed:
            summary += ", all passed" if n_pass == len(probed) else f", {n_pass} passed"
    n_np = sum(1 for r in results if r.status == "not-probed")
    if n_np:
        lacking = sorted({n for r in results if r.status == "not-probed" for n in r.unit.needs})
        summary += f"; {n_np} not probed (needs {', '.join(lacking)})"
    n_to = sum(1 for r in results if r.status == "timeout")
    if n_to:
        summary += f"; {n_to} timed out"
    shared = [r.front_end_group["log"] for r in results if r.front_end_group]
    if shared:
        summary += (
            f"; front ends of {len(shared)} units checked in "
            f"{len(set(shared))} shared translation unit" + "s" * (len(set(shared)) > 1)
        )
    status = FAIL if failed else (WARN if n_to else PASS)
    return summary, status, deepest


def _measurements(t_start: float, cpu0: resource.struct_rusage, budget_s: float) -> dict[str, Any]:
    """The machine and the time the probe took (details' measurement fields)."""
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpus": cpu_count(),
        "mem_available_gib": round(mem_available_gib(), 1),
        "loadavg_at_start": loadavg(),
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "cpu_seconds": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 1),
        "budget_s": budget_s,
    }


# "selected": the units the probe chooses (API hits, arch-gated families, one per target);
# "all": every unit the build compiles, to the front end (what the selection is measured by)
UNITS_MODES = ("selected", "all")


def _write_flag_notes(log: Path, explained: Sequence[tuple[str, str]]) -> None:
    lines = ["# flags and where they come from:"]
    last = None
    for f, origin in explained:
        if origin != last:
            lines.append(f"#   [{origin}]")
            last = origin
        lines.append(f"#     {f}")
    log.write_text("\n".join(lines) + "\n")


def _render_log(summary: str, results: Sequence[UnitResult], details: dict[str, Any]) -> str:
    out = [f"probe: {summary}", ""]
    for r in results:
        out.append(f"{r.status:10} {r.depth:9} {r.seconds:7.1f}s  {r.unit.path}")
        out.append(f"           why: {r.unit.why}")
        if r.first_error:
            out.append(f"           error: {r.first_error}")
        if r.note:
            out.append(f"           note: {r.note}")
        if r.log:
            out.append(f"           log: {r.log}")
    out += ["", json.dumps({k: v for k, v in details.items() if k != "units"}, indent=1)]
    return "\n".join(out) + "\n"
