"""Probe accuracy study (issue 16 item 6): the probe's own unit selection against the full
sweep (``--units all``: every unit the build compiles, to the front end), per cell.

From two probe stages of one cell (``stages[*]`` of the result files): the cause class of
each failing unit, caught / missed / false PASS, the cost of each mode (``compare``), and
the report (``render``). Running the probes and reading the files: the script,
benchmarks/studies/probe_study.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tabulate import tabulate

from vllm_matrix.infra import portable as portable_paths
from vllm_matrix.infra.errors import MatrixError

# a prefetched external's origin names the local git dir it came from ("git DIR@ref"),
# a path the workspace/cache/home scrubbing does not know
_GIT_DIR = re.compile(r"\bgit (/[^\s@]+)@")


_ABSOLUTE = re.compile(r"(?<![\w.<>-])/(?:work|root|home|tmp|var|opt|usr|mnt)/")


def portable(result: dict[str, Any], workspace: Path | None = None) -> dict[str, Any]:
    """A result made fit to commit: the tool's own scrubbing (``workspace``'s files relative
    to it), and a prefetched external's git dir cut to ``<git dir>``; raises if a path of
    this machine is left."""
    scrubbed = portable_paths.doc(result, portable_paths.Roots.here(workspace))
    text = _GIT_DIR.sub("git <git dir>@", json.dumps(scrubbed))
    left = _ABSOLUTE.search(text)
    if left:
        raise MatrixError(
            f"a path of this machine left in a result: ...{text[left.start() :][:80]}",
            "add its root to vllm_matrix.infra.portable (Roots) or cut it here",
        )
    doc: dict[str, Any] = json.loads(text)
    return doc


COMPILED = ("pass", "fail", "timeout")  # the unit went through the compiler (or hit its cache)


# the missing name in a compiler error (the probe's own short label: stages/probe/stage.py)
_MISSING = re.compile(r'(?:has no member|is not a member of|identifier) "?\'?([A-Za-z_][\w:]*)')


def probe_stage(result: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((stage for stage in result["stages"] if stage["stage"] == "probe"), None)


def unit_causes(probe: dict[str, Any]) -> dict[str, str]:
    """Each failed unit's cause class: the classifier's rule (a known signature, or
    "unknown"), with the missing name when the compiler's line names one; matched to the
    unit by the log its finding quotes."""
    by_log: dict[str, dict[str, Any]] = {}
    for finding in probe.get("findings", ()):
        if finding["level"] == "fail" and finding.get("evidence"):
            by_log.setdefault(finding["evidence"][0].rsplit(":", 1)[0], finding)
    out: dict[str, str] = {}
    for unit in probe["details"].get("units", []):
        if unit["status"] != "fail":
            continue
        finding = by_log.get(unit["log"])
        rule = finding["rule"].removeprefix("signature:") if finding else "unclassified"
        missing = _MISSING.search(
            unit.get("first_error") or (finding["message"] if finding else "")
        )
        name = missing.group(1).split("::")[-1] if missing else ""
        out[unit["path"]] = f"{rule} ({name})" if name else rule
    return out


def cost(probe: dict[str, Any]) -> dict[str, Any]:
    """What one probe run cost, from its result: the stage's wall and CPU seconds, the
    units compiled (front-end cache hits among them: only their preprocessing ran) and
    the seconds spent per phase."""
    details = probe["details"]
    units = details.get("units", [])
    compiled = [unit for unit in units if unit["status"] in COMPILED]
    return {
        "wall_s": details.get("wall_seconds", probe["seconds"]),
        "cpu_s": details.get("cpu_seconds"),
        "units_compiled": len(compiled),
        "cache_hits": sum(1 for unit in compiled if unit.get("front_end_cache") == "hit"),
        "cache_misses": sum(1 for unit in compiled if unit.get("front_end_cache") == "miss"),
        "uncached": sum(1 for unit in compiled if not unit.get("front_end_cache")),
        "not_probed": sum(1 for unit in units if unit["status"] == "not-probed"),
        "front_end_s": round(sum(unit["front_end_s"] for unit in compiled), 1),
        "codegen_s": round(sum(unit["codegen_s"] for unit in compiled), 1),
        "codegen_units": sum(1 for unit in compiled if unit["depth"] == "codegen"),
    }


def _ratio(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 3) if part is not None and whole else None


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
    sel_units = {unit["path"]: unit for unit in selected["details"].get("units", [])}
    sel_fail, all_fail = unit_causes(selected), unit_causes(sweep)
    sel_causes = set(sel_fail.values())
    not_selected = [
        {"path": path, "cause": cause, "cause_covered": cause in sel_causes}
        for path, cause in sorted(all_fail.items())
        if sel_units.get(path, {}).get("status") not in COMPILED
    ]
    missed_causes = sorted(set(all_fail.values()) - sel_causes)
    # a unit both compiled, with another outcome: the two modes disagree on the same input
    disagree = [
        {"path": unit["path"], "selected": sel_units[unit["path"]]["status"], "all": unit["status"]}
        for unit in sweep["details"].get("units", [])
        if unit["path"] in sel_units
        and unit["status"] in COMPILED
        and sel_units[unit["path"]]["status"] in COMPILED
        and unit["status"] != sel_units[unit["path"]]["status"]
    ]
    if all_fail:
        outcome = "caught" if selected["status"] == "fail" and not missed_causes else "MISSED"
    elif sel_fail:
        outcome = "selection FAIL, sweep PASS"
    else:
        outcome = "both pass"
    if outcome == "MISSED" and selected["status"] != "fail":
        outcome = "false PASS"
    cost_selected, cost_all = cost(selected), cost(sweep)
    # the sweep's cache hits on units the selection did not compile: cudafe++ runs that an
    # earlier cell (a neighbouring release) saved it, beyond what the selection itself ran
    cost_all["hits_beyond_selection"] = sum(
        1
        for unit in sweep["details"].get("units", [])
        if unit.get("front_end_cache") == "hit"
        and sel_units.get(unit["path"], {}).get("status") not in COMPILED
    )
    return {
        "selected_status": selected["status"],
        "all_status": sweep["status"],
        "outcome": outcome,
        "all_failing": dict(sorted(all_fail.items())),
        "selected_failing": dict(sorted(sel_fail.items())),
        # why the selection chose each unit that failed in it
        "selected_failing_why": {
            path: why_kind(sel_units[path].get("why", "")) for path in sorted(sel_fail)
        },
        "causes_all": sorted(set(all_fail.values())),
        "causes_missed": missed_causes,
        "failing_not_selected": not_selected,
        "disagree": disagree,
        "all_not_probed": sorted(
            unit["path"]
            for unit in sweep["details"].get("units", [])
            if unit["status"] == "not-probed"
        ),
        # sources the build generates at configure time: no unit in either mode
        "generated_sources": sweep["details"].get("generated_sources", []),
        # CMake external projects (their own builds): no unit in either mode
        "external_projects": sweep["details"].get("external_projects_not_probed", []),
        "cost": {
            "selected": cost_selected,
            "all": cost_all,
            "ratio": {
                key: _ratio(cost_selected[key], cost_all[key])
                for key in ("wall_s", "cpu_s", "units_compiled", "front_end_s")
            },
        },
    }


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _pct(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.0f} %"


def _covered(unit: dict[str, Any]) -> str:
    return "cause covered" if unit["cause_covered"] else "CAUSE NOT COVERED"


def _verdict_table(rows: list[dict[str, Any]]) -> str:
    table = [
        [
            row["vllm"],
            row["torch"],
            row["preflight"],
            row["verdict"]["selected"],
            row["verdict"]["all"],
            "<br>".join(f"`{path}`: {cause}" for path, cause in row["all_failing"].items()) or "—",
            "<br>".join(f"`{path}` ({why})" for path, why in row["selected_failing_why"].items())
            or "—",
            "<br>".join(
                f"`{unit['path']}` ({_covered(unit)})" for unit in row["failing_not_selected"]
            )
            or "—",
            f"**{row['outcome']}**",
        ]
        for row in rows
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


def _both(costs: dict[str, Any], key: str, shown: Callable[[Any], str] = str) -> str:
    """selected / all (ratio) of one cost figure."""
    sel, sweep, ratio = costs["selected"], costs["all"], costs["ratio"]
    return f"{shown(sel[key])} / {shown(sweep[key])} ({_pct(ratio[key])})"


def _cost_table(rows: list[dict[str, Any]]) -> str:
    table = []
    for row in rows:
        costs = row["cost"]
        sel, sweep = costs["selected"], costs["all"]
        table.append(
            [
                row["vllm"],
                row["torch"],
                _both(costs, "units_compiled"),
                f"{sel['cache_hits']} / {sweep['cache_hits']} "
                f"({sweep.get('hits_beyond_selection', 0)} beyond the selection's units)",
                f"{sweep['not_probed']}",
                _both(costs, "wall_s", _secs),
                _both(costs, "cpu_s", _secs),
                _both(costs, "front_end_s", _secs),
                f"{_secs(sel['codegen_s'])} ({sel['codegen_units']} reached codegen)",
                "<br>".join(
                    [f"`{generated}`" for generated in row["generated_sources"]]
                    + [
                        f"`{Path(external).stem}` (external project)"
                        for external in row["external_projects"]
                    ]
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
    ratios = [row["cost"]["ratio"][key] for row in rows if row["cost"]["ratio"][key] is not None]
    return f"{_pct(min(ratios))} to {_pct(max(ratios))}" if ratios else "—"


def _summary(rows: list[dict[str, Any]], how: str) -> list[str]:
    """One line: the outcomes, and the selection's cost as a fraction of the sweep's."""
    if not rows:
        return []
    outcomes: dict[str, int] = {}
    for row in rows:
        outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
    own = [row for row in rows if not row["cost"]["all"].get("hits_beyond_selection")]
    out = [
        f"- {how}: "
        + ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
        + "; the "
        f"selection cost {_span(rows, 'wall_s')} of the sweep's wall time, "
        f"{_span(rows, 'cpu_s')} of its CPU time, and compiled {_span(rows, 'units_compiled')} "
        f"of its units ({_span(rows, 'front_end_s')} of its front-end seconds)."
    ]
    if own and len(own) < len(rows):
        out.append(
            f"- {how}, only the {len(own)} cells whose sweep found no unit beyond the "
            "selection's own in the front-end cache ("
            + ", ".join(f"{row['vllm']} x {row['torch']}" for row in own)
            + f"): wall {_span(own, 'wall_s')}, CPU {_span(own, 'cpu_s')}, units "
            f"{_span(own, 'units_compiled')}, front-end seconds {_span(own, 'front_end_s')}."
        )
    cold_sel = [row for row in rows if row["cost"]["selected"]["cache_hits"] == 0]
    if cold_sel:
        out.append(
            f"- {how}, only the {len(cold_sel)} cells whose selection met no front-end cache "
            "hit at all ("
            + ", ".join(f"{row['vllm']} x {row['torch']}" for row in cold_sel)
            + f"): wall {_span(cold_sel, 'wall_s')}, CPU {_span(cold_sel, 'cpu_s')}, units "
            f"{_span(cold_sel, 'units_compiled')}, front-end seconds "
            f"{_span(cold_sel, 'front_end_s')}."
        )
    return out


def render(doc: dict[str, Any]) -> str:
    rows, cold = doc["cells"], doc["cold"]
    failing = [row for row in rows if row["all_failing"]]
    caught = [row for row in failing if row["outcome"] == "caught"]
    markdown = [
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
        markdown += [
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
    markdown += [
        "",
        "Machines: " + "; ".join(sorted({row["machine"] for row in rows + cold})) + ".",
    ]
    return "\n".join(markdown) + "\n"
