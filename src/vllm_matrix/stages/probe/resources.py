"""How many units at once: cores, MemAvailable, the load."""

from __future__ import annotations

import os
from pathlib import Path

from vllm_matrix.stages.probe.files import read_text


def mem_available_gib(meminfo: Path = Path("/proc/meminfo")) -> float:
    for line in read_text(meminfo).splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 4.0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def job_limit(
    per_unit_gib: float, jobs: int | None = None, meminfo: Path = Path("/proc/meminfo")
) -> int:
    """Concurrent units: cores (or ``jobs``), capped by MemAvailable / per-unit memory."""
    by_mem = int(mem_available_gib(meminfo) // per_unit_gib)
    return max(1, min(jobs or cpu_count(), by_mem))


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []
