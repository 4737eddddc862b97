"""Benchmark: the probe stage per cell, warm toolkit/env, median of N rounds.

The probe's three required cells (0.8.5 x 2.6.0, 0.10.1 x 2.6.0 with --force, 0.10.1 x
2.7.1; CUDA 12.4, sm_90) run in rotation, each round in a fresh workspace (nothing kept
between rounds but the cache's toolkits/envs/sources). Per round: the whole `run` wall,
the probe stage's seconds, its CPU seconds, verdict, units and load average at the start.

Prints one JSON object; `--write` also saves it to reports/bench/probe.json.
Run: nox -s bench-probe [-- --write] [-- --rounds N]   (default BENCH_ROUNDS or 3)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CELLS = {
    "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90": [],
    "vllm0.10.1-torch2.6.0-cu12.4-py3.12-sm90": ["--force"],
    "vllm0.10.1-torch2.7.1-cu12.4-py3.12-sm90": [],
}


def one(cell: str, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as scratch:
        ws = Path(scratch)
        (ws / "matrix.toml").write_text((HERE / "matrix.toml").read_text())
        (ws / "patches").symlink_to(HERE / "patches")
        load = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "vllm_matrix", "run", "--matrix", str(ws / "matrix.toml")]
        started = time.monotonic()
        subprocess.run(
            [*cmd, "--depth", "probe", "--cell", cell, *extra], check=True, capture_output=True
        )
        wall = time.monotonic() - started
        result = json.loads((ws / "results" / f"{cell}.json").read_text())
    probe = next(stage for stage in result["stages"] if stage["stage"] == "probe")
    units = probe["details"].get("units", [])
    return {
        "wall_s": round(wall, 1),
        "probe_s": probe["seconds"],
        "probe_cpu_s": probe["details"].get("cpu_seconds"),
        "depth": probe["details"].get("depth"),
        "status": probe["status"],
        "units": len(units),
        "failed": sorted(unit["path"] for unit in units if unit["status"] == "fail"),
        "load_at_start": round(load, 2),
    }


def median(rows: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(str(row[key])) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--write", action="store_true", help="save reports/bench/probe.json")
    args = parser.parse_args(argv)
    raw: dict[str, list[dict[str, object]]] = {cell: [] for cell in CELLS}
    for round_no in range(1, args.rounds + 1):
        for cell, extra in CELLS.items():
            row = one(cell, extra)
            raw[cell].append(row)
            print(f"round {round_no} {cell}: {row}", file=sys.stderr, flush=True)
    out = {
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "median_probe_s": {cell: median(rows, "probe_s") for cell, rows in raw.items()},
        "median_wall_s": {cell: median(rows, "wall_s") for cell, rows in raw.items()},
        "raw": raw,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.write:
        (HERE / "reports" / "bench" / "probe.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
