"""What a build will cost before it starts: edges, CPU, wall on C cores, memory, disk.

A model, not a constant. Its unit is a compile edge; its scale is the front end a probe
measured for the release's units on the machine (host preprocess + cudafe++: mostly torch's
and CUTLASS's headers, so it carries the release, the torch and the machine's speed); the
rest of an edge is code generation, one pass per gencode output:

    edge seconds = front end x (1 + g x arches per unit)

g (code generation per arch, in front ends) and the other figures are calibrated on the
builds recorded in knowledge/data/builds.toml. The wall is a list schedule of the edges on
the jobs ninja runs, in build.ninja's order (ninja <= 1.13 weighs every edge 1 and takes
ready edges in manifest order): all edges at the mean but the longest, placed where it sat
in the recorded builds; the longest edge is the floor. Validated leave-one-out
(calibrate without a build, predict it): ``leave_one_out`` and
benchmarks/studies/estimate_loo.py -> reports/bench/estimate-loo.md.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vllm_matrix.knowledge.builds import BuildRecord
from vllm_matrix.stages.compile.plan import plan_jobs

# Where in build.ninja's order the longest edge sat, as a fraction of the compile edges:
# vLLM 0.20.0's scaled_mm_c2x.cu is in _C_stable_libtorch, whose edges come after _C's 75
# (ninja started it 3 min 45 s into the -j32 build, 10 min 23 s into the -j16 one).
HEAVY_AT = 0.8


def version_key(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def makespan(durations: Sequence[float], jobs: int) -> float:
    """List scheduling: each edge, in order, starts on the first free job slot."""
    slots = [0.0] * max(1, min(jobs, len(durations) or 1))
    heapq.heapify(slots)
    end = 0.0
    for d in durations:
        t = heapq.heappop(slots) + d
        end = max(end, t)
        heapq.heappush(slots, t)
    return end


def schedule(n: int, total_s: float, longest_s: float, jobs: int, at: float) -> float:
    """The wall of ``n`` edges of ``total_s`` seconds on ``jobs`` slots: all at the mean of
    the others but one of ``longest_s``, placed at fraction ``at`` of the order."""
    if n <= 0:
        return 0.0
    if n == 1:
        return total_s
    longest = min(longest_s, total_s)
    rest = (total_s - longest) / (n - 1)
    durations = [rest] * n
    durations[min(n - 1, max(0, round(at * (n - 1))))] = longest
    return makespan(durations, jobs)


@dataclass(frozen=True)
class Calibration:
    codegen_per_arch: float  # g: code generation per gencode output, in front ends
    longest_per_mean: float  # the longest edge / the mean edge
    overhead_s: float  # setup.py + CMake before ninja's first step
    bytes_per_edge_arch: float  # build outputs per compile edge and arch
    peaks: tuple[tuple[str, int], ...]  # (vLLM release, peak RSS of one job, MiB)
    builds: tuple[str, ...]  # the record ids it rests on

    def peak_rss_mib(self, vllm: str) -> tuple[int, str]:
        """The recorded per-job peak of the release nearest ``vllm`` (and which)."""
        key = version_key(vllm)

        def dist(item: tuple[str, int]) -> tuple[int, ...]:
            other = version_key(item[0])
            width = max(len(key), len(other))
            a = key + (0,) * (width - len(key))
            b = other + (0,) * (width - len(other))
            return tuple(abs(x - y) for x, y in zip(a, b, strict=True))

        release, mib = min(self.peaks, key=dist)
        return mib, release


def compile_edges(r: BuildRecord) -> int:
    """Work edges less one link per target."""
    return max(1, r.edges - len(r.targets))


def calibrate(records: Sequence[BuildRecord]) -> Calibration:
    if not records:
        raise ValueError("no recorded builds to calibrate on")
    g = [
        (r.edge_seconds / (compile_edges(r) * r.front_end_s) - 1) / r.mean_archs
        for r in records
        if r.front_end_s > 0
    ]
    ratios = [
        r.longest_edge_s / (r.edge_seconds / compile_edges(r))
        for r in records
        if r.longest_edge_s > 0
    ]
    full = [r.until_first_step_s for r in records if r.full] or [
        r.until_first_step_s for r in records
    ]
    out = [
        r.output_bytes / (compile_edges(r) * r.mean_archs) for r in records if r.output_bytes > 0
    ]
    return Calibration(
        max(0.0, statistics.mean(g)) if g else 3.0,
        statistics.mean(ratios) if ratios else 6.0,
        statistics.median(full),
        statistics.mean(out) if out else 3e6,
        tuple((r.vllm, r.peak_rss_mib) for r in records),
        tuple(r.id for r in records),
    )


@dataclass(frozen=True)
class EdgeSet:
    """What a build compiles: work edges per target (compile + one link each)."""

    targets: dict[str, int]
    mean_archs: float
    counted_from: str
    not_counted: tuple[str, ...] = ()

    @property
    def edges(self) -> int:
        return sum(self.targets.values())

    @property
    def compile_edges(self) -> int:
        return max(1, self.edges - len(self.targets))


@dataclass(frozen=True)
class Estimate:
    edges: dict[str, int]
    cpu_s: float
    wall_s: float
    wall_range_s: tuple[float, float]  # the longest edge first / last in the order
    longest_edge_s: float
    jobs: int
    max_jobs: int
    jobs_reason: str
    peak_rss_job_mib: int
    # the heaviest job at its recorded peak beside jobs - 1 at the build's own sizing
    # (build/plan.py: ~4 GiB per nvcc job and thread); every job at the peak at once would
    # be jobs x peak, which no recorded build came near (the 16-core one: 18 GiB in use)
    peak_rss_total_mib: int
    disk_bytes: int
    cores: int
    mem_gib: float | None
    uncertainty: dict[str, float]  # quantity -> the largest leave-one-out miss (fraction)
    rests_on: tuple[str, ...]
    not_counted: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["wall_range_s"] = list(self.wall_range_s)
        out["rests_on"] = list(self.rests_on)
        out["not_counted"] = list(self.not_counted)
        return out

    def line(self) -> str:
        """One line: what a person decides on."""
        unc = self.uncertainty
        lo, hi = self.wall_range_s
        wall = (
            f"~{_dur(self.wall_s)} wall on {self.cores} cores at MAX_JOBS={self.max_jobs} "
            f"({_dur(lo)}-{_dur(hi)} by where ninja puts the longest edge, "
            f"{_dur(self.longest_edge_s)})"
        )
        return (
            f"{sum(self.edges.values())} edges, {self.cpu_s / 3600:.1f} CPU-h"
            f"{_pm(unc.get('cpu_s'))}, {wall}{_pm(unc.get('wall_s'))}; peak RSS "
            f"{self.peak_rss_job_mib / 1024:.1f} GiB per job{_pm(unc.get('peak_rss_mib'))}, "
            f"~{self.peak_rss_total_mib / 1024:.0f} GiB at {self.jobs} jobs"
            + (
                f" (more than the {self.mem_gib:.0f} GiB available: lower MAX_JOBS if the "
                "heavy edges meet)"
                if self.mem_gib is not None and self.peak_rss_total_mib / 1024 > self.mem_gib
                else ""
            )
            + "; disk "
            f"~{self.disk_bytes / 2**30:.1f} GiB"
            + (f"; not counted: {', '.join(self.not_counted)}" if self.not_counted else "")
        )


def _dur(s: float) -> str:
    m = round(s / 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m} min"


def _pm(frac: float | None) -> str:
    return "" if frac is None else f" (±{100 * frac:.0f} %)"


def predict(
    edges: EdgeSet,
    front_end_s: float,
    cal: Calibration,
    *,
    vllm: str,
    cores: int,
    mem_gib: float | None,
    n_archs: int,
    jobs: int | None = None,
    nvcc_threads: int | None = None,
    tree_bytes: int = 0,
    uncertainty: Mapping[str, float] | None = None,
    rests_on: Sequence[str] = (),
) -> Estimate:
    """The cost of building ``edges`` on ``cores`` (MemAvailable ``mem_gib``), with the jobs
    and nvcc threads the build stage would choose (build/plan.py, its own per-job memory)."""
    plan = plan_jobs(cores, mem_gib, n_archs, jobs=jobs, nvcc_threads=nvcc_threads)
    j = plan.jobs
    codegen = cal.codegen_per_arch * edges.mean_archs
    mean_edge = front_end_s * (1 + codegen)
    # nvcc threads split one edge's gencode outputs: the CPU stays, the edge's wall shrinks
    per_thread = min(plan.nvcc_threads, max(1.0, edges.mean_archs))
    mean_wall = front_end_s * (1 + codegen / per_thread)
    n = edges.compile_edges
    cpu = n * mean_edge
    longest = min(n * mean_wall, cal.longest_per_mean * mean_wall)
    peak_mib, peak_from = cal.peak_rss_mib(vllm)
    peak_mib *= plan.nvcc_threads
    wall = cal.overhead_s + schedule(n, n * mean_wall, longest, j, HEAVY_AT)
    lo = cal.overhead_s + schedule(n, n * mean_wall, longest, j, 0.0)
    hi = cal.overhead_s + schedule(n, n * mean_wall, longest, j, 1.0)
    disk = int(2 * cal.bytes_per_edge_arch * n * edges.mean_archs) + tree_bytes
    return Estimate(
        dict(edges.targets),
        round(cpu, 1),
        round(wall, 1),
        (round(lo, 1), round(hi, 1)),
        round(longest, 1),
        j,
        plan.max_jobs_env,
        plan.reason,
        peak_mib,
        round(peak_mib + (j - 1) * plan.per_job_gib * plan.nvcc_threads * 1024),
        disk,
        cores,
        mem_gib,
        dict(uncertainty or {}),
        (
            *rests_on,
            f"edges: {edges.counted_from}",
            f"front end {front_end_s:.1f} s per unit x (1 + {cal.codegen_per_arch:.2f} x "
            f"{edges.mean_archs:.2f} arches) = {mean_edge:.0f} s per edge",
            f"peak RSS per job: the recorded build of vLLM {peak_from}",
            f"calibrated on {len(cal.builds)} recorded builds ({', '.join(cal.builds)})",
        ),
        edges.not_counted,
    )


def record_edges(r: BuildRecord) -> EdgeSet:
    return EdgeSet(
        {k: t.edges for k, t in r.targets.items()}, r.mean_archs, f"recorded build {r.id}"
    )


@dataclass(frozen=True)
class LooRow:
    id: str
    cores: int
    jobs: int
    measured: dict[str, float | None]
    predicted: dict[str, float]

    def error(self, key: str) -> float | None:
        m = self.measured.get(key)
        if not m:
            return None
        return (self.predicted[key] - m) / m


def leave_one_out(records: Sequence[BuildRecord]) -> list[LooRow]:
    """Each recorded build predicted by the model calibrated on the others."""
    rows = []
    for r in records:
        others = [o for o in records if o.id != r.id]
        if not others:
            continue
        cal = calibrate(others)
        est = predict(
            record_edges(r),
            r.front_end_s,
            cal,
            vllm=r.vllm,
            cores=r.cores,
            mem_gib=None,
            n_archs=len(r.archs),
            jobs=r.jobs,
            nvcc_threads=1,  # every recorded build ran one nvcc thread per edge
        )
        measured: dict[str, float | None] = {
            # a resumed run's wall and CPU cover only what it ran: its edges' seconds count
            "wall_s": r.wall_s if r.full else None,
            "cpu_s": r.cpu_s if r.full else r.edge_seconds,
            "peak_rss_mib": float(r.peak_rss_mib),
        }
        predicted = {
            "wall_s": est.wall_s,
            "cpu_s": est.cpu_s,
            "peak_rss_mib": float(est.peak_rss_job_mib),
        }
        rows.append(LooRow(r.id, r.cores, r.jobs, measured, predicted))
    return rows


def loo_uncertainty(rows: Sequence[LooRow]) -> dict[str, float]:
    """Per quantity, the largest relative miss of the leave-one-out."""
    out: dict[str, float] = {}
    for key in ("wall_s", "cpu_s", "peak_rss_mib"):
        errs = [abs(e) for row in rows if (e := row.error(key)) is not None]
        if errs:
            out[key] = round(max(errs), 2)
    return out
