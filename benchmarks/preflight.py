"""Benchmark: the whole shipped matrix at --depth preflight with warm caches.

Runs `python -m vllm_matrix run --depth preflight` N times (--rounds, default BENCH_ROUNDS
or 5) after one warm-up and prints the median and raw wall times (seconds) as JSON.
Run: nox -s bench-preflight [-- --rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CMD = [sys.executable, "-m", "vllm_matrix", "run", "--depth", "preflight"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "5")))
    args = parser.parse_args(argv)
    subprocess.run(CMD, check=True, capture_output=True)  # warm-up: sources into the cache
    raw = []
    for _ in range(args.rounds):
        started = time.monotonic()
        subprocess.run(CMD, check=True, capture_output=True)
        raw.append(round(time.monotonic() - started, 2))
    print(json.dumps({"rounds": args.rounds, "median_s": statistics.median(raw), "raw_s": raw}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
