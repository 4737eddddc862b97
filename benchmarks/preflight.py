"""Benchmark: the whole shipped matrix at --depth preflight with warm caches.

Runs `python -m vllm_matrix run --depth preflight` N times (default 5) after one warm-up
and prints the median and raw wall times (seconds) as JSON. Run: nox -s bench-preflight
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

N = int(os.environ.get("BENCH_ROUNDS", "5"))
CMD = [sys.executable, "-m", "vllm_matrix", "run", "--depth", "preflight"]


def main() -> None:
    subprocess.run(CMD, check=True, capture_output=True)  # warm-up: sources into the cache
    raw = []
    for _ in range(N):
        t = time.monotonic()
        subprocess.run(CMD, check=True, capture_output=True)
        raw.append(round(time.monotonic() - t, 2))
    print(json.dumps({"rounds": N, "median_s": statistics.median(raw), "raw_s": raw}))


if __name__ == "__main__":
    main()
