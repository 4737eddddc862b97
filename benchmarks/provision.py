"""Benchmark: cold provisioning of toolkits and torch envs, warm reuse, kill-and-recover.

Each cold round uses a fresh VLLM_MATRIX_CACHE *and* fresh uv/pip caches, so nothing is
reused from earlier runs; downloads come from the configured index / Debian mirror.
Prints one JSON object (medians + raw numbers).
Run: nox -s bench-provision [-- --rounds N]   (default BENCH_ROUNDS or 3)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = {
    "debian-12.4": "from vllm_matrix.stages import toolkit; toolkit.provide('debian', '12.4')",
    "pypi-13.0": "from vllm_matrix.stages import toolkit; toolkit.provide('pypi', '13.0')",
    "env-py3.12-torch2.6.0": "from vllm_matrix.stages import env; env.provide('3.12', '2.6.0')",
}
SECOND_CELL = """
import time
from vllm_matrix.pipeline import context, runner
from vllm_matrix.infra.config import Cell
ws = context.Workspace(__import__('pathlib').Path({ws!r}))
c = Cell('0.8.5', '2.6.0', '12.4', 'debian', '3.12', ('8.0',))
t = time.monotonic(); st = runner.run_cell(c, ws, depth='toolkit')
print(time.monotonic() - t, st[-1].stage, st[-1].status)
"""


def timed(code: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.monotonic() - started


def fresh_env(tmp: Path) -> dict[str, str]:
    return os.environ | {
        "VLLM_MATRIX_CACHE": str(tmp / "cache"),
        "UV_CACHE_DIR": str(tmp / "uv-cache"),
        "PIP_NO_CACHE_DIR": "1",
    }


def kill_and_recover(what: str, after: float, tmp: Path) -> dict[str, object]:
    env = fresh_env(tmp)
    first = subprocess.Popen([sys.executable, "-c", CODE[what]], env=env, start_new_session=True)
    time.sleep(after)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    started = time.monotonic()
    rerun = subprocess.run(
        [sys.executable, "-c", CODE[what]], env=env, capture_output=True, text=True
    )
    return {
        "killed_after_s": after,
        "rerun_rc": rerun.returncode,
        "rerun_s": round(time.monotonic() - started, 1),
        "tail": rerun.stderr[-300:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    args = parser.parse_args(argv)
    raw: dict[str, list[float]] = {what: [] for what in CODE}
    second: list[float] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-prov-") as scratch:
            tmp = Path(scratch)
            env = fresh_env(tmp)
            for what, code in CODE.items():
                raw[what].append(round(timed(code, env), 1))
            out = subprocess.run(
                [sys.executable, "-c", SECOND_CELL.format(ws=str(tmp / "ws"))],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            second.append(round(float(out.split()[0]), 2))
    kills = {}
    for what, after in (("debian-12.4", 20.0), ("env-py3.12-torch2.6.0", 10.0)):
        with tempfile.TemporaryDirectory(prefix="bench-kill-") as scratch:
            kills[what] = kill_and_recover(what, after, Path(scratch))
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "cold_median_s": {what: statistics.median(secs) for what, secs in raw.items()},
                "cold_raw_s": raw,
                "second_cell_ready_median_s": statistics.median(second),
                "second_cell_raw_s": second,
                "kill_and_recover": kills,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
