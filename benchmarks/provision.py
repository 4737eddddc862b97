"""Benchmark: cold provisioning of toolkits and torch envs, warm reuse, kill-and-recover.

Each cold round uses a fresh VLLM_MATRIX_CACHE *and* fresh uv/pip caches, so nothing is
reused from earlier runs; downloads come from the configured index / Debian mirror.
Prints one JSON object (medians + raw numbers). Run: nox -s bench-provision
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
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
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.monotonic() - t


def fresh_env(tmp: Path) -> dict[str, str]:
    return os.environ | {
        "VLLM_MATRIX_CACHE": str(tmp / "cache"),
        "UV_CACHE_DIR": str(tmp / "uv-cache"),
        "PIP_NO_CACHE_DIR": "1",
    }


def kill_and_recover(what: str, after: float, tmp: Path) -> dict[str, object]:
    env = fresh_env(tmp)
    p = subprocess.Popen([sys.executable, "-c", CODE[what]], env=env, start_new_session=True)
    time.sleep(after)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", CODE[what]], env=env, capture_output=True, text=True)
    return {
        "killed_after_s": after,
        "rerun_rc": r.returncode,
        "rerun_s": round(time.monotonic() - t, 1),
        "tail": r.stderr[-300:],
    }


def main() -> None:
    raw: dict[str, list[float]] = {k: [] for k in CODE}
    second: list[float] = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="bench-prov-") as d:
            tmp = Path(d)
            env = fresh_env(tmp)
            for k, code in CODE.items():
                raw[k].append(round(timed(code, env), 1))
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
        with tempfile.TemporaryDirectory(prefix="bench-kill-") as d:
            kills[what] = kill_and_recover(what, after, Path(d))
    print(
        json.dumps(
            {
                "rounds": ROUNDS,
                "cold_median_s": {k: statistics.median(v) for k, v in raw.items()},
                "cold_raw_s": raw,
                "second_cell_ready_median_s": statistics.median(second),
                "second_cell_raw_s": second,
                "kill_and_recover": kills,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
