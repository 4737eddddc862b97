"""Job sizing (MAX_JOBS / NVCC_THREADS) from cores and a fake meminfo."""

from __future__ import annotations

import pytest

from vllm_matrix.infra.host import mem_available_gib
from vllm_matrix.stages.compile.plan import plan_jobs

# ------------------------------------------------------------------ job sizing

MEMINFO = """\
MemTotal:       24615364 kB
MemFree:        18874440 kB
MemAvailable:   22020096 kB
Buffers:          123456 kB
"""


def test_mem_available_from_meminfo() -> None:
    assert mem_available_gib(MEMINFO) == pytest.approx(21.0, abs=0.01)
    assert mem_available_gib("MemTotal: 1 kB\n") is None


def test_jobs_bounded_by_cores_when_memory_is_plenty() -> None:
    p = plan_jobs(2, mem_available_gib(MEMINFO), 1)
    assert (p.jobs, p.nvcc_threads, p.max_jobs_env) == (2, 1, 2)
    assert p.env() == {"MAX_JOBS": "2", "NVCC_THREADS": "1"}
    assert "2 cores" in p.reason and "21.0 GiB" in p.reason and not p.low_memory


def test_jobs_bounded_by_memory_on_a_big_machine() -> None:
    p = plan_jobs(64, 30.0, 1)
    assert p.jobs == 7  # 30 GiB / 4 GiB per nvcc job
    assert "= 7" in p.reason


def test_low_memory_still_runs_one_job_and_says_so() -> None:
    p = plan_jobs(8, 2.5, 1)
    assert p.jobs == 1 and p.low_memory


def test_several_arches_get_nvcc_threads_and_max_jobs_compensates() -> None:
    p = plan_jobs(16, 100.0, 3)
    assert p.nvcc_threads == 3 and p.jobs == 5
    # vLLM's setup.py runs MAX_JOBS // NVCC_THREADS jobs
    assert p.max_jobs_env == 15 and "divides" in p.reason
    assert plan_jobs(2, 100.0, 3).nvcc_threads == 1


def test_overrides_win_and_memory_is_still_reported() -> None:
    p = plan_jobs(2, 6.0, 1, jobs=4, nvcc_threads=2)
    assert (p.jobs, p.nvcc_threads, p.max_jobs_env) == (4, 2, 8)
    assert "as asked" in p.reason and "warning" in p.reason
