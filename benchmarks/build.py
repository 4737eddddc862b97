"""Benchmark: the canary's build (vLLM 0.4.2 x torch 2.3.0 x Debian CUDA 12.4 x sm_80 x py3.11).

Measured side by side, in one run, with the same warm ccache (CCACHE_DIR of the cache):
1. overhead: the tool's build (``build.build_wheel``, clean work copy) against the raw
   command it wraps (``build.stage.pip_wheel_argv`` with the same environment, in a prepared
   copy of the same patched tree), alternating, BENCH_ROUNDS rounds (default 2);
2. no-change rebuild: the tool's build again on the kept work dir (ninja has nothing to
   do), to compare with a cold build (the cold number comes from a separate run: a cold
   build is ~1.5 h here and is not repeated by this script);
3. resume: a clean tool build killed with SIGKILL (its process group, and the compilers
   ninja started in groups of their own) once half of the work edges are in .ninja_log,
   then run again: how many steps the second run did, and its wall time.

Each build runs in a child process; wall, CPU (user+sys) and the largest descendant's
RSS come from wait4(). Prints one JSON object; ``--write`` saves it to
reports/bench/build.json. Run: nox -s bench-build [-- --write] [-- --rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vllm_matrix.infra import portable

HERE = Path(__file__).resolve().parents[1]

SETUP = """
import json, sys
from pathlib import Path
from vllm_matrix.infra import host  # noqa: E402
from vllm_matrix.stages import compile as build
from vllm_matrix.stages import env
from vllm_matrix.stages.env import fixups
from vllm_matrix.stages import patches
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import toolkit
from vllm_matrix.infra.config import Cell
cell = Cell("0.4.2", "2.3.0", "12.4", "debian", "3.11", ("8.0",))
tree = source.get_tree(cell.source_spec)
tk = toolkit.provide(cell.provider, cell.cuda)
tv = env.provide(cell.python, cell.torch, "full")
fx = fixups.compute(tk, tv, cell.arch)
series = patches.load_series(patches.default_series(Path(sys.argv[1])))
work = Path(sys.argv[2])
"""
TOOL = (
    SETUP
    + """
r = build.build_wheel(cell, tree, tk, tv, fx, work, work / "dist", series=series,
                      clean=sys.argv[3] == "clean", progress=lambda m: print(m, flush=True))
print("RESULT " + json.dumps({"status": r.status, "summary": r.summary,
      "steps": r.details.get("steps"), "ccache": r.details.get("ccache"),
      "resources": r.details.get("resources")}))
"""
)
# The raw side: the same patched, pin-neutralised tree (made untimed here), then only the
# command the tool wraps, with the environment the tool gives it.
RAW_PREP = (
    SETUP
    + """
from vllm_matrix.infra.cache import cache_root
from vllm_matrix.stages.compile import ccache, stage, workcopy
from vllm_matrix.stages.compile import plan as jobplan
chosen = patches.select(series, tree.version)
wc = workcopy.prepare_work_copy(tree, work / "src", chosen, clean=True)
mem = host.mem_available_gib(host.read_meminfo())
plan = jobplan.plan_jobs(host.cpu_count(), mem, len(cell.arch))
e = fx.env() | plan.env() | {"NINJA_STATUS": "[%f/%t] ", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
e |= ccache.ccache_env(work / "src", cache_root() / "ccache")
argv = [str(a) for a in stage.pip_wheel_argv(tv, work / "src", work / "wheelhouse")]
print("RESULT " + json.dumps({"argv": argv, "env": e}))
"""
)


def child(
    argv: list[str], env: dict[str, str] | None = None, kill_when: Any = None
) -> dict[str, Any]:
    """Run argv in its own process group; wall, CPU and peak RSS from wait4()."""
    log_fd, log_name = tempfile.mkstemp(prefix="bench-build-", suffix=".log")
    log = os.fdopen(log_fd, "w")
    started = time.monotonic()
    build = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    killed = False
    while True:
        pid, status, usage = os.wait4(build.pid, os.WNOHANG)
        if pid:
            break
        if kill_when is not None and not killed and kill_when():
            kill_tree(build.pid)
            killed = True
        time.sleep(1)
    wall = time.monotonic() - started
    log.close()
    text = Path(log_name).read_text(errors="replace")
    lines = text.splitlines()
    result = next((json.loads(ln[7:]) for ln in lines if ln.startswith("RESULT ")), None)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "exit": os.waitstatus_to_exitcode(status),
        "killed": killed,
        "result": result,
        "log": log_name,
    }


def kill_tree(pgid: int) -> None:
    """SIGKILL the build's process group and every process descended from it (ninja puts
    each compile in a group of its own): what a kill of the whole job does."""
    doomed = {pgid}
    grew = True
    while grew:
        grew = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in doomed:
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in doomed or int(fields[2]) == pgid:  # ppid, pgrp
                doomed.add(int(entry.name))
                grew = True
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def half_done(work: Path) -> Any:
    from vllm_matrix.stages.compile import ninja

    def check() -> bool:
        dirs = ninja._build_dirs(work / "src")
        total = sum(
            ninja.ninja_work_edges(build_dir / "build.ninja")
            for build_dir in dirs
            if (build_dir / "build.ninja").is_file()
        )
        logged = sum(len(ninja.ninja_logged(build_dir)) for build_dir in dirs)
        return total > 0 and logged >= total / 2

    return check


def tool(work: Path, clean: bool, kill_when: Any = None) -> dict[str, Any]:
    mode = "clean" if clean else "keep"
    return child([sys.executable, "-c", TOOL, str(HERE), str(work), mode], kill_when=kill_when)


def raw(work: Path) -> dict[str, Any]:
    prep = child([sys.executable, "-c", RAW_PREP, str(HERE), str(work)])
    spec = prep["result"]
    shutil.rmtree(work / "wheelhouse", ignore_errors=True)
    built = child(spec["argv"], env=spec["env"])
    built["wheels"] = [wheel.name for wheel in (work / "wheelhouse").glob("*.whl")]
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "2")))
    parser.add_argument("--write", action="store_true", help="save reports/bench/build.json")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-build-"))
    out: dict[str, Any] = {"rounds": args.rounds, "cores": os.cpu_count(), "work": str(base)}
    rows: dict[str, list[dict[str, Any]]] = {"tool": [], "raw": []}
    for round_no in range(args.rounds):
        order = ("raw", "tool") if round_no % 2 == 0 else ("tool", "raw")
        for side in order:
            row = raw(base / "raw") if side == "raw" else tool(base / "tool", clean=True)
            rows[side].append(row)
            print(f"round {round_no + 1} {side}: {row['wall_s']} s", file=sys.stderr, flush=True)
    med = {
        side: statistics.median(row["wall_s"] for row in side_rows)
        for side, side_rows in rows.items()
    }
    out["overhead"] = {
        "median_wall_s": med,
        "overhead_s": round(med["tool"] - med["raw"], 1),
        "overhead_ratio": round(med["tool"] / med["raw"] - 1, 4),
        "raw": rows,
    }
    nochange = tool(base / "tool", clean=False)
    out["no_change_rebuild"] = nochange
    print(f"no-change rebuild: {nochange['wall_s']} s", file=sys.stderr, flush=True)
    first = tool(base / "resume", clean=True, kill_when=half_done(base / "resume"))
    time.sleep(2)
    second = tool(base / "resume", clean=False)
    out["resume"] = {"killed_run": first, "resumed_run": second}
    print(
        f"resume: killed after {first['wall_s']} s, resumed in {second['wall_s']} s",
        file=sys.stderr,
    )
    # argv and env name the cache and work dirs: as $VLLM_MATRIX_CACHE/..., not this machine's.
    text = json.dumps(portable.doc(out, portable.Roots.here(HERE)), indent=1)
    print(text)
    if args.write:
        (HERE / "reports" / "bench" / "build.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
