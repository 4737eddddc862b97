"""Job sizing: how many units compile at once and how many nvcc threads each gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# nvcc needs 3-5 GB per job (vllm #3180, #15452); measured: 3.0 GB peak for vLLM 0.4.2
# sm_80 units. The middle of the range leaves room for the heavier units of later releases.
PER_JOB_GIB = 4.0


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
