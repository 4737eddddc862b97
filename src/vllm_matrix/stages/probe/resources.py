"""How many units at once: cores, MemAvailable (infra.host)."""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.infra import host

# MemAvailable unreadable: assume room for one 4-GiB unit rather than none.
UNKNOWN_MEM_GIB = 4.0


def mem_available_gib(meminfo: Path = host.MEMINFO) -> float:
    """MemAvailable in GiB, ``UNKNOWN_MEM_GIB`` when it cannot be read."""
    gib = host.mem_available_gib(host.read_meminfo(meminfo))
    return UNKNOWN_MEM_GIB if gib is None else gib


def job_limit(per_unit_gib: float, jobs: int | None = None, meminfo: Path = host.MEMINFO) -> int:
    """Concurrent units: cores (or ``jobs``), capped by MemAvailable / per-unit memory."""
    by_mem = int(mem_available_gib(meminfo) // per_unit_gib)
    return max(1, min(jobs or host.cpu_count(), by_mem))
