"""Facts of the machine the tool runs on: usable cores and available memory."""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def read_meminfo(path: Path = MEMINFO) -> str:
    """/proc/meminfo's text, or "" where it cannot be read."""
    try:
        return path.read_text()
    except OSError:
        return ""


def mem_available_gib(meminfo_text: str) -> float | None:
    """MemAvailable in GiB; None when the text does not say (the caller decides)."""
    for line in meminfo_text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return None


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages, [] where /proc/loadavg cannot be read."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []
