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
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2]
STUDY = HERE / "benchmarks" / "studies" / "accuracy" / "study"
MATRIX = STUDY / "matrix.toml"
MODES = ("selected", "all")


# ==================================================================== running


def _deadline(stop_at: str | None) -> float | None:
    """Seconds since the epoch of the next HH:MM UTC (today's, or tomorrow's if past)."""
    if not stop_at:
        return None
    h, m = (int(x) for x in stop_at.split(":"))
    now = dt.datetime.now(dt.UTC)
    t = now.replace(hour=h, minute=m, second=0, microsecond=0)
    if t <= now - dt.timedelta(hours=12):
        t += dt.timedelta(days=1)
    return t.timestamp()


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
        p = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=STUDY, start_new_session=True
        )
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the tool and its compilers
            p.wait()
            log.write("\n[probe_study] stopped at the deadline\n")
            return "stopped at the deadline"
    src = STUDY / "results" / f"{cell_id}.json"
    d = json.loads(src.read_text())
    if not any(s["stage"] == "probe" for s in d["stages"]):
        return f"failed (rc {rc}): no probe stage in the result"
    keep(d, STUDY / f"{sub}{mode}" / f"{cell_id}.json")
    # the probe's own summary log (per-unit lines and errors) of this mode
    plog = STUDY / "results" / "logs" / cell_id / "probe" / "probe.log"
    if plog.is_file():
        shutil.copyfile(plog, logs / f"{cell_id}-{'cold-' if cold else ''}{mode}.probe.log")
    return "done" if rc in (0, 1) else f"done (rc {rc})"


# a prefetched external's origin names the local git dir it came from ("git DIR@ref"),
# a path the workspace/cache/home scrubbing does not know
_GIT_DIR = re.compile(r"\bgit (/[^\s@]+)@")
_ABSOLUTE = re.compile(r"(?<![\w.<>-])/(?:work|root|home|tmp|var|opt|usr|mnt)/")


def portable(d: dict[str, Any]) -> dict[str, Any]:
    """A result made fit to commit: the tool's own scrubbing, and a prefetched external's
    git dir cut to ``<git dir>``; raises if a path of this machine is left."""
    from vllm_matrix.infra import portable as port

    out: dict[str, Any] = port.doc(d, port.Roots.here(STUDY))
    text = _GIT_DIR.sub("git <git dir>@", json.dumps(out))
    m = _ABSOLUTE.search(text)
    if m:
        raise SystemExit(f"a path of this machine left in a result: ...{text[m.start() :][:80]}")
    doc: dict[str, Any] = json.loads(text)
    return doc


def keep(d: dict[str, Any], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(portable(d), indent=1) + "\n")


def cmd_run(args: argparse.Namespace) -> None:
    from vllm_matrix.infra import config

    cells = [c for c in config.load_matrix(MATRIX).cells if not args.cell or args.cell == c.id]
    modes = args.modes.split(",")
    deadline = _deadline(args.stop_at)
    for c in cells:
        for mode in modes:
            sub = "cold/" if args.cold else ""
            if (STUDY / f"{sub}{mode}" / f"{c.id}.json").is_file() and not args.again:
                print(f"{c.id} {mode}: already there", flush=True)
                continue
            if deadline is not None and time.time() >= deadline:
                print(f"{c.id} {mode}: not started (past --stop-at)", flush=True)
                continue
            t0 = time.monotonic()
            print(f"{time.strftime('%H:%M:%S')} {c.id} {sub}{mode}: running", flush=True)
            how = _run_one(c.id, mode, deadline, args.cold)
            print(f"{c.id} {mode}: {how} in {time.monotonic() - t0:.0f} s", flush=True)


# ==================================================================== comparing

COMPILED = ("pass", "fail", "timeout")  # the unit went through the compiler (or hit its cache)
# the missing name in a compiler error (the probe's own short label: stages/probe/stage.py)
_MISSING = re.compile(r'(?:has no member|is not a member of|identifier) "?\'?([A-Za-z_][\w:]*)')


def probe_stage(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in result["stages"] if s["stage"] == "probe"), None)


def unit_causes(probe: dict[str, Any]) -> dict[str, str]:
    """Each failed unit's cause class: the classifier's rule (a known signature, or
    "unknown"), with the missing name when the compiler's line names one; matched to the
    unit by the log its finding quotes."""
    by_log: dict[str, dict[str, Any]] = {}
    for f in probe.get("findings", ()):
        if f["level"] == "fail" and f.get("evidence"):
            by_log.setdefault(f["evidence"][0].rsplit(":", 1)[0], f)
    out: dict[str, str] = {}
    for u in probe["details"].get("units", []):
        if u["status"] != "fail":
            continue
        f = by_log.get(u["log"])
        rule = f["rule"].removeprefix("signature:") if f else "unclassified"
        m = _MISSING.search(u.get("first_error") or (f["message"] if f else ""))
        name = m.group(1).split("::")[-1] if m else ""
        out[u["path"]] = f"{rule} ({name})" if name else rule
    return out


def cost(probe: dict[str, Any]) -> dict[str, Any]:
    """What one probe run cost, from its result: the stage's wall and CPU seconds, the
    units compiled (front-end cache hits among them: only their preprocessing ran) and
    the seconds spent per phase."""
    d = probe["details"]
    units = d.get("units", [])
    compiled = [u for u in units if u["status"] in COMPILED]
    return {
        "wall_s": d.get("wall_seconds", probe["seconds"]),
        "cpu_s": d.get("cpu_seconds"),
        "units_compiled": len(compiled),
        "cache_hits": sum(1 for u in compiled if u.get("front_end_cache") == "hit"),
        "cache_misses": sum(1 for u in compiled if u.get("front_end_cache") == "miss"),
        "uncached": sum(1 for u in compiled if not u.get("front_end_cache")),
        "not_probed": sum(1 for u in units if u["status"] == "not-probed"),
        "front_end_s": round(sum(u["front_end_s"] for u in compiled), 1),
        "codegen_s": round(sum(u["codegen_s"] for u in compiled), 1),
        "codegen_units": sum(1 for u in compiled if u["depth"] == "codegen"),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def why_kind(why: str) -> str:
    """Why the probe chose a unit, in a word or two (units.py's ``why`` texts)."""
    for prefix, kind in (
        ("API scan", "API scan"),
        ("representative of family", "family representative"),
        ("bindings", "bindings"),
    ):
        if why.startswith(prefix):
            return kind
    return why.split(":", 1)[0] or "?"


def compare(selected: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """The selection's probe stage against the sweep's, for one cell.

    "caught": the sweep found failing units and the selection's verdict is FAIL with every
    cause class the sweep found (a unit it did not compile may fail for a cause another,
    selected unit already shows). "false PASS": the selection passed, the sweep failed."""
    sel_units = {u["path"]: u for u in selected["details"].get("units", [])}
    sel_fail, all_fail = unit_causes(selected), unit_causes(sweep)
    sel_causes = set(sel_fail.values())
    not_selected = [
        {"path": p, "cause": c, "cause_covered": c in sel_causes}
        for p, c in sorted(all_fail.items())
        if sel_units.get(p, {}).get("status") not in COMPILED
    ]
    missed_causes = sorted(set(all_fail.values()) - sel_causes)
    # a unit both compiled, with another outcome: the two modes disagree on the same input
    disagree = [
        {"path": u["path"], "selected": sel_units[u["path"]]["status"], "all": u["status"]}
        for u in sweep["details"].get("units", [])
        if u["path"] in sel_units
        and u["status"] in COMPILED
        and sel_units[u["path"]]["status"] in COMPILED
        and u["status"] != sel_units[u["path"]]["status"]
    ]
    if all_fail:
        outcome = "caught" if selected["status"] == "fail" and not missed_causes else "MISSED"
    elif sel_fail:
        outcome = "selection FAIL, sweep PASS"
    else:
        outcome = "both pass"
    if outcome == "MISSED" and selected["status"] != "fail":
        outcome = "false PASS"
    cs, ca = cost(selected), cost(sweep)
    # the sweep's cache hits on units the selection did not compile: cudafe++ runs that an
    # earlier cell (a neighbouring release) saved it, beyond what the selection itself ran
    ca["hits_beyond_selection"] = sum(
        1
        for u in sweep["details"].get("units", [])
        if u.get("front_end_cache") == "hit"
        and sel_units.get(u["path"], {}).get("status") not in COMPILED
    )
    return {
        "selected_status": selected["status"],
        "all_status": sweep["status"],
        "outcome": outcome,
        "all_failing": dict(sorted(all_fail.items())),
        "selected_failing": dict(sorted(sel_fail.items())),
        # why the selection chose each unit that failed in it
        "selected_failing_why": {
            p: why_kind(sel_units[p].get("why", "")) for p in sorted(sel_fail)
        },
        "causes_all": sorted(set(all_fail.values())),
        "causes_missed": missed_causes,
        "failing_not_selected": not_selected,
        "disagree": disagree,
        "all_not_probed": sorted(
            u["path"] for u in sweep["details"].get("units", []) if u["status"] == "not-probed"
        ),
        # sources the build generates at configure time: no unit in either mode
        "generated_sources": sweep["details"].get("generated_sources", []),
        # CMake external projects (their own builds): no unit in either mode
        "external_projects": sweep["details"].get("external_projects_not_probed", []),
        "cost": {
            "selected": cs,
            "all": ca,
            "ratio": {
                k: _ratio(cs[k], ca[k])
                for k in ("wall_s", "cpu_s", "units_compiled", "front_end_s")
            },
        },
    }


# ==================================================================== report


def _row(cell_id: str, base: Path = STUDY) -> dict[str, Any] | None:
    """The cell's comparison from base/{selected,all}/<id>.json; None unless both exist."""
    from vllm_matrix.infra import results

    paths = {m: base / m / f"{cell_id}.json" for m in MODES}
    if not all(p.is_file() for p in paths.values()):
        return None
    for p in paths.values():  # copies kept by an earlier version of run: made portable
        keep(json.loads(p.read_text()), p)
    docs = {m: results.read(p) for m, p in paths.items()}
    probes = {m: probe_stage(d) for m, d in docs.items()}
    sel, sweep = probes["selected"], probes["all"]
    if sel is None or sweep is None:
        return None
    pre = next(s for s in docs["all"]["stages"] if s["stage"] == "preflight")
    return {
        "id": cell_id,
        "vllm": docs["all"]["cell"]["vllm"],
        "torch": docs["all"]["cell"]["torch"],
        "preflight": {"pass": "OK", "warn": "OK (warnings)"}.get(
            pre["status"], pre["status"].upper()
        ),
        "machine": results.machine_label(docs["all"]["machine"]),
        "verdict": {m: docs[m]["verdict"]["verdict"] for m in MODES},
        **compare(sel, sweep),
    }


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _verdict_table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    table = [
        [
            r["vllm"],
            r["torch"],
            r["preflight"],
            r["verdict"]["selected"],
            r["verdict"]["all"],
            "<br>".join(f"`{p}`: {c}" for p, c in r["all_failing"].items()) or "—",
            "<br>".join(f"`{p}` ({w})" for p, w in r["selected_failing_why"].items()) or "—",
            "<br>".join(
                f"`{x['path']}` ({'cause covered' if x['cause_covered'] else 'CAUSE NOT COVERED'})"
                for x in r["failing_not_selected"]
            )
            or "—",
            f"**{r['outcome']}**",
        ]
        for r in rows
    ]
    return tabulate(
        table,
        headers=[
            "vLLM",
            "torch",
            "preflight",
            "selected",
            "all (sweep)",
            "sweep's failing units: cause",
            "selection's failing units (why chosen)",
            "failing units the selection did not compile",
            "outcome",
        ],
        tablefmt="github",
        disable_numparse=True,
    )


def _cost_table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        c = r["cost"]
        s, a, q = c["selected"], c["all"], c["ratio"]
        table.append(
            [
                r["vllm"],
                r["torch"],
                f"{s['units_compiled']} / {a['units_compiled']} ({_pct(q['units_compiled'])})",
                f"{s['cache_hits']} / {a['cache_hits']} "
                f"({a.get('hits_beyond_selection', 0)} beyond the selection's units)",
                f"{a['not_probed']}",
                f"{_s(s['wall_s'])} / {_s(a['wall_s'])} ({_pct(q['wall_s'])})",
                f"{_s(s['cpu_s'])} / {_s(a['cpu_s'])} ({_pct(q['cpu_s'])})",
                f"{_s(s['front_end_s'])} / {_s(a['front_end_s'])} ({_pct(q['front_end_s'])})",
                f"{_s(s['codegen_s'])} ({s['codegen_units']} reached codegen)",
                "<br>".join(
                    [f"`{g}`" for g in r["generated_sources"]]
                    + [f"`{Path(e).stem}` (external project)" for e in r["external_projects"]]
                )
                or "—",
            ]
        )
    return tabulate(
        table,
        headers=[
            "vLLM",
            "torch",
            "units compiled",
            "front-end cache hits",
            "not probed (both)",
            "probe wall s",
            "probe CPU s",
            "front-end s (sum over units)",
            "selection's codegen s",
            "in neither mode (generated at configure time; external projects)",
        ],
        tablefmt="github",
        disable_numparse=True,
    )


def _span(rows: list[dict[str, Any]], key: str) -> str:
    xs = [r["cost"]["ratio"][key] for r in rows if r["cost"]["ratio"][key] is not None]
    return f"{_pct(min(xs))} to {_pct(max(xs))}" if xs else "—"


def _summary(rows: list[dict[str, Any]], how: str) -> list[str]:
    """One line: the outcomes, and the selection's cost as a fraction of the sweep's."""
    if not rows:
        return []
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    own = [r for r in rows if not r["cost"]["all"].get("hits_beyond_selection")]
    out = [
        f"- {how}: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + "; the "
        f"selection cost {_span(rows, 'wall_s')} of the sweep's wall time, "
        f"{_span(rows, 'cpu_s')} of its CPU time, and compiled {_span(rows, 'units_compiled')} "
        f"of its units ({_span(rows, 'front_end_s')} of its front-end seconds)."
    ]
    if own and len(own) < len(rows):
        out.append(
            f"- {how}, only the {len(own)} cells whose sweep found no unit beyond the "
            "selection's own in the front-end cache ("
            + ", ".join(f"{r['vllm']} x {r['torch']}" for r in own)
            + f"): wall {_span(own, 'wall_s')}, CPU {_span(own, 'cpu_s')}, units "
            f"{_span(own, 'units_compiled')}, front-end seconds {_span(own, 'front_end_s')}."
        )
    cold_sel = [r for r in rows if r["cost"]["selected"]["cache_hits"] == 0]
    if cold_sel:
        out.append(
            f"- {how}, only the {len(cold_sel)} cells whose selection met no front-end cache "
            "hit at all ("
            + ", ".join(f"{r['vllm']} x {r['torch']}" for r in cold_sel)
            + f"): wall {_span(cold_sel, 'wall_s')}, CPU {_span(cold_sel, 'cpu_s')}, units "
            f"{_span(cold_sel, 'units_compiled')}, front-end seconds "
            f"{_span(cold_sel, 'front_end_s')}."
        )
    return out


def render(doc: dict[str, Any]) -> str:
    rows, cold = doc["cells"], doc["cold"]
    failing = [r for r in rows if r["all_failing"]]
    caught = [r for r in failing if r["outcome"] == "caught"]
    md = [
        "# Probe accuracy study: the selection against the full sweep",
        "",
        "Generated by `python benchmarks/studies/probe_study.py report` from the result files of "
        "`python benchmarks/studies/probe_study.py run` "
        "(benchmarks/studies/accuracy/study/{selected,all}/): "
        "per cell of benchmarks/studies/accuracy/study/matrix.toml, `python -m vllm_matrix run "
        "--depth probe --force --units selected` (the probe's own units; depth auto: front "
        "end, then code generation for arch-gated units within its 180 s budget) and "
        "`--units all` (every unit the build compiles, to the front end).",
        "",
        f"Cells: {len(rows)} finished; {len(failing)} with failing units in the sweep, "
        f"{len(caught)} of them caught by the selection (verdict FAIL with every cause class "
        "the sweep found). "
        + (
            "Not finished (no result for both modes): "
            + ", ".join(f"`{c}`" for c in doc["not_finished"])
            + "."
            if doc["not_finished"]
            else "Every cell finished."
        ),
        "",
        *_summary(rows, "as run"),
        *(_summary(cold, "cold (no front-end cache)") if cold else []),
        "",
        "## Verdicts and causes",
        "",
        _verdict_table(rows),
        "",
        "Cause class: the failure classifier's signature id (knowledge/data/signatures.toml) "
        "and the name the compiler says is missing. Caught: the selection's verdict is FAIL "
        "with every cause class the sweep found; a failing unit the selection did not compile "
        'is "cause covered" when a selected unit failed for the same class.',
        "",
        "## Cost (selected / all, ratio), as run",
        "",
        _cost_table(rows),
        "",
        "Wall and CPU: the probe stage's own measurement (details.wall_seconds, cpu_seconds), "
        "code generation included. Front-end s: the units' front-end seconds summed (both "
        "modes stop there, except the selection's code generation, shown apart). A front-end "
        "cache hit (content-keyed: an unchanged unit's passing front end, from an earlier run "
        "of either mode or of a neighbouring release) still runs the preprocessor but skips "
        "cudafe++; failing units and C++ units are never cached. The selection ran first in "
        "each cell, so the sweep met the selection's passing units in the cache, and later "
        "cells met earlier cells' units: these costs are those of this order, not of a cold "
        "machine"
        + (
            " (the cold runs are below)."
            if cold
            else " (no run without the cache, `run --cold`, was made for this report)."
        )
        + " Not probed: units that need a file the build generates at configure time "
        "(neither mode compiles them).",
    ]
    if cold:
        md += [
            "",
            "## Cold runs (`--no-front-end-cache`: every front end runs)",
            "",
            "Both modes again without the front-end cache (neither read nor filled), "
            "from benchmarks/studies/accuracy/study/cold/{selected,all}/.",
            "",
            _verdict_table(cold),
            "",
            _cost_table(cold),
        ]
    md += ["", "Machines: " + "; ".join(sorted({r["machine"] for r in rows + cold})) + "."]
    return "\n".join(md) + "\n"


def cmd_report(_: argparse.Namespace) -> None:
    from vllm_matrix.infra import config, portable

    ids = [c.id for c in config.load_matrix(MATRIX).cells]
    rows = [r for r in (_row(i) for i in ids) if r is not None]
    doc = {
        "cells": rows,
        "cold": [r for r in (_row(i, STUDY / "cold") for i in ids) if r is not None],
        "not_finished": [i for i in ids if i not in {r["id"] for r in rows}],
    }
    doc = portable.doc(doc, portable.Roots.here(STUDY))
    out = HERE / "reports" / "bench"
    (out / "probe-study.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = render(doc)
    (out / "probe-study.md").write_text(md)
    print(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the probes (both modes per cell)")
    r.add_argument("--cell", help="only this cell id")
    r.add_argument("--modes", default=",".join(MODES), help="comma-separated, in run order")
    r.add_argument("--stop-at", help="HH:MM UTC: start nothing after, stop what runs then")
    r.add_argument("--again", action="store_true", help="rerun pairs already recorded")
    r.add_argument(
        "--cold",
        action="store_true",
        help="without the front-end cache (--no-front-end-cache), kept under cold/",
    )
    r.set_defaults(fn=cmd_run)
    sub.add_parser("report", help="render reports/bench/probe-study.{json,md}").set_defaults(
        fn=cmd_report
    )
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
