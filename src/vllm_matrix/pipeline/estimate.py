"""A cell's build cost before it builds (stages/compile/cost.py's model, fed by the cell):
the edges from the release's own CMake evaluated for the cell's nvcc and arches (the
recorded build of the same release and arches where there is one: it counts the sources
CMake generates), the front end from the cell's probe where it ran, else the recorded build
nearest in torch; the whole wheel and the model-serving partial set."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import host, results
from vllm_matrix.infra.config import Cell
from vllm_matrix.knowledge import builds
from vllm_matrix.knowledge.builds import BuildData, BuildRecord
from vllm_matrix.stages import probe
from vllm_matrix.stages.compile import cost
from vllm_matrix.stages.probe.units import unit_archs

# What `vllm.LLM(...)` on a ModelOpt FP8 checkpoint loads (README "Partial builds").
SERVING_TARGETS = ("_C", "_C_stable_libtorch")


@dataclass(frozen=True)
class FrontEnd:
    seconds: float
    source: str


def probe_front_end(previous: results.Envelope | None) -> FrontEnd | None:
    """From the cell's result file: its last probe's front end (``front_end_of``)."""
    if not previous:
        return None
    st = next((s for s in previous.get("stages", []) if s.get("stage") == "probe"), None)
    if st is None:
        return None
    det = results.probe_details(st.get("details", {}))
    return front_end_of(det.get("units", []), previous.get("machine") or {}, det.get("cpu_seconds"))


def front_end_of(
    units: Sequence[results.ProbeUnitDoc],
    machine: dict[str, Any],
    cpu_seconds: float | None = None,
) -> FrontEnd | None:
    """The median front end per CUDA unit of a probe's units (those whose front end ran:
    not cache hits, which skip cudafe++), in CPU-seconds: each unit's own front-end CPU
    where the probe recorded it (``front_end_cpu_s``, wait4 of its steps). Older results
    hold wall times only: on a loaded machine (or beside another cell's probe) a compiler
    gets a share of a core, taken as the probe's CPU-seconds over its units' wall seconds
    (an upper bound beside another cell, whose compilers count in the process's CPU too)."""
    ran = [
        u
        for u in units
        if u.get("kind") == "cuda"
        and u.get("status") == "pass"
        and u.get("front_end_cache") != "hit"
        and float(u.get("front_end_s", 0)) > 0
    ]
    # A unit whose front end ran in one translation unit with others (stages/probe/unity.py)
    # holds that run's time: one unit's headers plus the others' own code, so more than its
    # own front end. Units that ran alone decide where there are any; else the shared runs,
    # once each, as an upper bound.
    alone = [u for u in ran if (u.get("front_end_group") or {}).get("units", 1) <= 1]
    shared = {str((u.get("front_end_group") or {}).get("log")): u for u in ran if u not in alone}
    upper = not alone and bool(shared)
    picked = alone or list(shared.values())
    fe = [float(u["front_end_s"]) for u in picked]
    if not fe:
        return None
    what = f"the cell's probe ({len(fe)} " + (
        "shared translation unit(s) of CUDA units, an upper bound" if upper else "CUDA units"
    )
    wall = statistics.median(fe)
    # Each step's own CPU (wait4), where the probe recorded it: exact beside another cell.
    own = [float(u.get("front_end_cpu_s") or 0) for u in picked]
    if all(c > 0 for c in own):
        seconds = statistics.median(own)
        how = f"median {seconds:.0f} CPU-s of its compilers, {wall:.0f} s wall"
    else:
        walls = sum(float(u.get("seconds", 0)) for u in units)
        share = min(1.0, float(cpu_seconds) / walls) if cpu_seconds and walls > 0 else 1.0
        seconds = wall * share
        how = f"median {wall:.0f} s wall x {share:.2f} of a core"
    return FrontEnd(round(seconds, 1), f"{what}, {how}; {machine.get('cpus', '?')} cores)")


def recorded_front_end(cell: Cell, data: BuildData) -> FrontEnd:
    """No probe of the cell: the recorded build nearest in torch, then in vLLM."""

    def key(r: BuildRecord) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (
            _dist(cost.version_key(cell.torch), cost.version_key(r.torch)),
            _dist(cost.version_key(cell.vllm), cost.version_key(r.vllm)),
        )

    r = min(data.builds, key=key)
    return FrontEnd(
        r.front_end_s,
        f"no probe of this cell: the front end recorded with {r.id} (torch {r.torch}; "
        "run the probe for this cell's own)",
    )


def _dist(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    w = max(len(a), len(b))
    a, b = a + (0,) * (w - len(a)), b + (0,) * (w - len(b))
    return tuple(abs(x - y) for x, y in zip(a, b, strict=True))


def edge_sets(
    tree: Path, cell: Cell, data: BuildData, partial: Sequence[str] = SERVING_TARGETS
) -> tuple[cost.EdgeSet, cost.EdgeSet | None]:
    """(the whole wheel, the partial set of targets ``partial`` or None where the release
    has none of them)."""
    archs = tuple(cell.arch)
    model = probe.build_model(tree, cell.cuda, archs)
    srcs = [p for p in model.built_sources() if model.target_of(p) is not None]
    per_target = Counter(tg.name for p in srcs if (tg := model.target_of(p)) is not None)
    n_archs = [len(unit_archs(model, p)) or 1 for p in srcs]
    mean_archs = statistics.mean(n_archs) if n_archs else float(len(archs))
    targets = {t: n + 1 for t, n in per_target.items()}  # + its link edge
    counted = f"vLLM {cell.vllm}'s CMake evaluated for nvcc {cell.cuda}, {';'.join(archs)}"
    rec = next(
        (r for r in data.builds if r.vllm == cell.vllm and r.archs == archs and r.full), None
    )
    not_counted: list[str] = []
    if rec is not None:
        for name, tr in rec.targets.items():
            targets[name] = tr.edges
        counted += f"; {', '.join(rec.targets)} as built in {rec.id}"
        if model.empty_globs and any(t not in rec.targets for t in per_target):
            not_counted.append(f"generated sources outside {', '.join(rec.targets)}")
    elif model.empty_globs:
        not_counted.append(f"{len(model.empty_globs)} generated-source globs")
    full_targets = dict(targets)
    for inc in model.skipped_includes:
        project = Path(inc).stem
        known = next(
            (e for e in data.external if e.vllm == cell.vllm and e.project == project), None
        )
        if known is not None:
            full_targets[project] = known.units + 1
        else:
            not_counted.append(project)
    full = cost.EdgeSet(full_targets, mean_archs, counted, tuple(not_counted))
    part = {t: n for t, n in targets.items() if t in partial}
    some = (
        cost.EdgeSet(
            part,
            mean_archs,
            counted,
            tuple(x for x in not_counted if "generated" in x),
        )
        if part
        else None
    )
    return full, some


def estimate_cell(
    cell: Cell,
    tree: Path,
    *,
    previous: results.Envelope | None = None,
    front_end: FrontEnd | None = None,
    targets: Sequence[str] = (),
    cores: int | None = None,
    mem_gib: float | None = None,
    jobs: int | None = None,
    nvcc_threads: int | None = None,
    data: BuildData | None = None,
) -> dict[str, Any]:
    """The cell's estimate as result data: the whole wheel ("wheel") and the partial set
    ("partial": ``targets``, default the serving set), each its figures and one line. The
    front end: ``front_end``, else the cell's last probe in ``previous``, else recorded."""
    data = data or builds.load()
    cal = cost.calibrate(data.builds)
    unc = cost.loo_uncertainty(cost.leave_one_out(data.builds))
    fe = front_end or probe_front_end(previous) or recorded_front_end(cell, data)
    here = cores is None
    n_cores = cores or host.cpu_count()
    mem = mem_gib
    if mem is None and here:
        mem = host.mem_available_gib(host.read_meminfo(host.MEMINFO))
    full, partial = edge_sets(tree, cell, data, tuple(targets) or SERVING_TARGETS)
    out: dict[str, Any] = {
        "cores": n_cores,
        "mem_gib": None if mem is None else round(mem, 1),
        "front_end": {"seconds": fe.seconds, "source": fe.source},
        "uncertainty": unc,
    }
    kinds: Sequence[tuple[str, cost.EdgeSet | None]] = (("wheel", full), ("partial", partial))
    for name, es in kinds:
        if es is None:
            continue
        est = cost.predict(
            es,
            fe.seconds,
            cal,
            vllm=cell.vllm,
            cores=n_cores,
            mem_gib=mem,
            n_archs=len(cell.arch),
            jobs=jobs,
            nvcc_threads=nvcc_threads,
            uncertainty=unc,
            rests_on=(f"front end: {fe.source}",),
        )
        out[name] = est.to_json() | {"line": est.line()}
        if name == "partial" and es is not None:
            out[name]["targets"] = list(es.targets)
    return out


def say(est: dict[str, Any], kind: str) -> str:
    """The line printed before a build: its estimate, MAX_JOBS and why."""
    e = est[kind]
    what = "the wheel" if kind == "wheel" else f"targets {', '.join(e['targets'])}"
    return (
        f"estimate for {what}: {e['line']}. MAX_JOBS={e['max_jobs']} because "
        f"{e['jobs_reason']}. Rests on: {'; '.join(e['rests_on'])}"
    )
