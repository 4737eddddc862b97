"""Benchmark: the probe stage per cell, warm toolkit/env, median of N rounds.

The probe's three required cells (0.8.5 x 2.6.0, 0.10.1 x 2.6.0 with --force, 0.10.1 x
2.7.1; CUDA 12.4, sm_90) run in rotation, each round in a fresh workspace (nothing kept
between rounds but the cache's toolkits/envs/sources). Per round: the whole `run` wall,
the probe stage's seconds, its CPU seconds, verdict, units and load average at the start.

Prints one JSON object; `--write` also saves it to reports/bench/probe.json.
Run: nox -s bench-probe [-- --write]   (BENCH_ROUNDS, default 3)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CELLS = {
    "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90": [],
    "vllm0.10.1-torch2.6.0-cu12.4-py3.12-sm90": ["--force"],
    "vllm0.10.1-torch2.7.1-cu12.4-py3.12-sm90": [],
}


def one(cell: str, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as d:
        ws = Path(d)
        (ws / "matrix.toml").write_text((HERE / "matrix.toml").read_text())
        (ws / "patches").symlink_to(HERE / "patches")
        load = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "vllm_matrix", "run", "--matrix", str(ws / "matrix.toml")]
        t = time.monotonic()
        subprocess.run(
            [*cmd, "--depth", "probe", "--cell", cell, *extra], check=True, capture_output=True
        )
        wall = time.monotonic() - t
        res = json.loads((ws / "results" / f"{cell}.json").read_text())
    probe = next(s for s in res["stages"] if s["stage"] == "probe")
    units = probe["details"].get("units", [])
    return {
        "wall_s": round(wall, 1),
        "probe_s": probe["seconds"],
        "probe_cpu_s": probe["details"].get("cpu_seconds"),
        "depth": probe["details"].get("depth"),
        "status": probe["status"],
        "units": len(units),
        "failed": sorted(u["path"] for u in units if u["status"] == "fail"),
        "load_at_start": round(load, 2),
    }


def median(rows: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(str(r[key])) for r in rows)


def main() -> None:
    raw: dict[str, list[dict[str, object]]] = {c: [] for c in CELLS}
    for n in range(ROUNDS):
        for cell, extra in CELLS.items():
            r = one(cell, extra)
            raw[cell].append(r)
            print(f"round {n + 1} {cell}: {r}", file=sys.stderr, flush=True)
    out = {
        "rounds": ROUNDS,
        "cores": os.cpu_count(),
        "median_probe_s": {c: median(v, "probe_s") for c, v in raw.items()},
        "median_wall_s": {c: median(v, "wall_s") for c, v in raw.items()},
        "raw": raw,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if "--write" in sys.argv[1:]:
        (HERE / "reports" / "bench" / "probe.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
