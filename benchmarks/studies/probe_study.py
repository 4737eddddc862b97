"""Probe accuracy study (issue 16 item 6): the probe's own unit selection against the full
sweep (``--units all``: every unit the build compiles, to the front end), per cell.

``run``: for each cell of benchmarks/studies/accuracy/study/matrix.toml, one probe per mode, one at
a time (``python -m vllm_matrix run --depth probe --force --units MODE --cell ID``); each
result file is copied to benchmarks/studies/accuracy/study/<mode>/<cell id>.json (the tool
rewrites results/<cell id>.json on every run). A (cell, mode) already there is skipped.
``--stop-at HH:MM`` (UTC): no probe starts after it, and a probe still running then is
stopped (its process group); the cell is then missing from the report, which says so.

``report``: reports/bench/probe-study.{json,md} from those result files only. The copies
stay on the machine that ran them (gitignored, as benchmarks/studies/accuracy/results/ is: they
quote where the toolkit and torch were downloaded from); the report's JSON keeps every number.

Run: python benchmarks/studies/probe_study.py run [--stop-at 03:30] [--cell ID]
         [--modes selected,all]
     python benchmarks/studies/probe_study.py report
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vllm_matrix.infra import config, results
from vllm_matrix.infra import portable as portable_paths
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.studies.probe_study import compare, portable, probe_stage, render

HERE = Path(__file__).resolve().parents[2]
STUDY = HERE / "benchmarks" / "studies" / "accuracy" / "study"
MATRIX = STUDY / "matrix.toml"
MODES = ("selected", "all")


# ==================================================================== running


def _deadline(stop_at: str | None) -> float | None:
    """Seconds since the epoch of the next HH:MM UTC (today's, or tomorrow's if past)."""
    if not stop_at:
        return None
    hour, minute = (int(part) for part in stop_at.split(":"))
    now = dt.datetime.now(dt.UTC)
    stop = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if stop <= now - dt.timedelta(hours=12):
        stop += dt.timedelta(days=1)
    return stop.timestamp()


def _run_one(cell_id: str, mode: str, deadline: float | None, cold: bool = False) -> str:
    """One probe run; returns "done", "failed (rc N)" or "stopped at the deadline".
    ``cold``: without the front-end cache (neither read nor filled), kept under cold/."""
    sub = "cold/" if cold else ""
    logs = STUDY / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "vllm_matrix",
        "run",
        "--matrix",
        str(MATRIX),
        "--depth",
        "probe",
        "--force",
        "--units",
        mode,
        "--cell",
        cell_id,
        *(["--no-front-end-cache"] if cold else []),
    ]
    timeout = None if deadline is None else deadline - time.time()
    with (logs / f"{cell_id}-{'cold-' if cold else ''}{mode}.log").open("w") as log:
        log.write("$ " + " ".join(argv[1:]) + "\n")
        log.flush()
        tool = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=STUDY, start_new_session=True
        )
        try:
            rc = tool.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(tool.pid, signal.SIGKILL)  # the tool and its compilers
            tool.wait()
            log.write("\n[probe_study] stopped at the deadline\n")
            return "stopped at the deadline"
    result = json.loads((STUDY / "results" / f"{cell_id}.json").read_text())
    if not any(stage["stage"] == "probe" for stage in result["stages"]):
        return f"failed (rc {rc}): no probe stage in the result"
    keep(result, STUDY / f"{sub}{mode}" / f"{cell_id}.json")
    # the probe's own summary log (per-unit lines and errors) of this mode
    plog = STUDY / "results" / "logs" / cell_id / "probe" / "probe.log"
    if plog.is_file():
        shutil.copyfile(plog, logs / f"{cell_id}-{'cold-' if cold else ''}{mode}.probe.log")
    return "done" if rc in (0, 1) else f"done (rc {rc})"


def keep(result: dict[str, Any], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(portable(result, STUDY), indent=1) + "\n")


def cmd_run(args: argparse.Namespace) -> None:
    cells = [
        cell for cell in config.load_matrix(MATRIX).cells if not args.cell or args.cell == cell.id
    ]
    modes = args.modes.split(",")
    deadline = _deadline(args.stop_at)
    for cell in cells:
        for mode in modes:
            sub = "cold/" if args.cold else ""
            if (STUDY / f"{sub}{mode}" / f"{cell.id}.json").is_file() and not args.again:
                print(f"{cell.id} {mode}: already there", flush=True)
                continue
            if deadline is not None and time.time() >= deadline:
                print(f"{cell.id} {mode}: not started (past --stop-at)", flush=True)
                continue
            started = time.monotonic()
            print(f"{time.strftime('%H:%M:%S')} {cell.id} {sub}{mode}: running", flush=True)
            how = _run_one(cell.id, mode, deadline, args.cold)
            print(f"{cell.id} {mode}: {how} in {time.monotonic() - started:.0f} s", flush=True)


# ==================================================================== report


def _row(cell_id: str, base: Path = STUDY) -> dict[str, Any] | None:
    """The cell's comparison from base/{selected,all}/<id>.json; None unless both exist."""
    paths = {mode: base / mode / f"{cell_id}.json" for mode in MODES}
    if not all(path.is_file() for path in paths.values()):
        return None
    for path in paths.values():  # copies kept by an earlier version of run: made portable
        keep(json.loads(path.read_text()), path)
    docs = {mode: results.read(path) for mode, path in paths.items()}
    probes = {mode: probe_stage(doc) for mode, doc in docs.items()}
    selected, sweep = probes["selected"], probes["all"]
    if selected is None or sweep is None:
        return None
    pre = next(stage for stage in docs["all"]["stages"] if stage["stage"] == "preflight")
    return {
        "id": cell_id,
        "vllm": docs["all"]["cell"]["vllm"],
        "torch": docs["all"]["cell"]["torch"],
        "preflight": {"pass": "OK", "warn": "OK (warnings)"}.get(
            pre["status"], pre["status"].upper()
        ),
        "machine": results.machine_label(docs["all"]["machine"]),
        "verdict": {mode: docs[mode]["verdict"]["verdict"] for mode in MODES},
        **compare(selected, sweep),
    }


def cmd_report(_: argparse.Namespace) -> None:
    ids = [cell.id for cell in config.load_matrix(MATRIX).cells]
    rows = [row for row in (_row(cell_id) for cell_id in ids) if row is not None]
    cold = [row for row in (_row(cell_id, STUDY / "cold") for cell_id in ids) if row is not None]
    finished = {row["id"] for row in rows}
    doc = {
        "cells": rows,
        "cold": cold,
        "not_finished": [cell_id for cell_id in ids if cell_id not in finished],
    }
    doc = portable_paths.doc(doc, portable_paths.Roots.here(STUDY))
    out = HERE / "reports" / "bench"
    (out / "probe-study.json").write_text(json.dumps(doc, indent=1) + "\n")
    markdown = render(doc)
    (out / "probe-study.md").write_text(markdown)
    print(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="cmd", required=True)
    run = commands.add_parser("run", help="run the probes (both modes per cell)")
    run.add_argument("--cell", help="only this cell id")
    run.add_argument("--modes", default=",".join(MODES), help="comma-separated, in run order")
    run.add_argument("--stop-at", help="HH:MM UTC: start nothing after, stop what runs then")
    run.add_argument("--again", action="store_true", help="rerun pairs already recorded")
    run.add_argument(
        "--cold",
        action="store_true",
        help="without the front-end cache (--no-front-end-cache), kept under cold/",
    )
    run.set_defaults(fn=cmd_run)
    commands.add_parser("report", help="render reports/bench/probe-study.{json,md}").set_defaults(
        fn=cmd_report
    )
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except MatrixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
