"""Render reports/compat.json and reports/compat.md from results/*.json.

The markdown is generated from the JSON, never written by hand.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from vllm_matrix.infra import portable, results
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.config import Matrix
from vllm_matrix.infra.results import Verdict
from vllm_matrix.report import cause, readme

SCHEMA = "vllm-matrix/compat"
SCHEMA_VERSION = 1
# reports/<OTHER_DIR>/*.json: result files of runs on other machines (copied verbatim).
OTHER_DIR = "device"

DEPTH_WORDS = {
    "source": "source fetched",
    "facts": "source facts read",
    "preflight": "preflight (rules, no compile)",
    "toolkit": "toolkit provisioned",
    "env": "env created",
    "patches": "patches applied",
    "probe": "probe (risky units compiled)",
    "build": "full build",
    "audit": "wheel audited",
    "smoke": "smoke-tested",
    "gpu": "ran on the GPU",
    "model": "served a model",
    "none": "not run",
}


def depth_words(depth: str) -> str:
    """``gpu (partial: targets _C)`` -> ``ran on the GPU (partial: targets _C)``."""
    stage, _, rest = depth.partition(" ")
    return " ".join(x for x in (DEPTH_WORDS.get(stage, stage), rest) if x)


def collect(matrix: Matrix, results_dir: Path, other_dir: Path | None = None) -> dict[str, Any]:
    """The matrix's cells from ``results_dir``; plus ``other_runs``: result files copied
    from other machines into ``other_dir`` (e.g. ``--env current`` runs on the GPU
    machine), reported as they are, beside the matrix."""
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for cell in matrix.cells:
        path = results_dir / f"{cell.id}.json"
        d = _read(path, f"{results_dir.name}/{path.name}", skipped) if path.exists() else None
        if d is None:
            rows.append(
                {
                    "id": cell.id,
                    "cell": cell.to_json(),
                    "verdict": "UNKNOWN",
                    "depth": "none",
                    "cause": "not run yet",
                    "fix": "",
                    "evidence": [],
                    "findings": [],
                    "modelopt_fp8": "",
                    "modelopt_evidence": "",
                    "machine": None,
                    "stages": [],
                    "written": None,
                }
            )
            continue
        rows.append(_row(cell.id, d))
    others = sorted(other_dir.glob("*.json")) if other_dir and other_dir.is_dir() else []
    other_docs = [(p.stem, _read(p, f"reports/{OTHER_DIR}/{p.name}", skipped)) for p in others]
    doc = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "matrix": matrix.path.name,
        "cells": rows,
        "other_runs": [_row(stem, d) for stem, d in other_docs if d is not None],
        # `vllm-matrix blackwell`: per release, the cheapest toolchain serving sm_120
        "blackwell": _blackwell(results_dir / "blackwell.json"),
    }
    if skipped:  # files that could not be read: named in the report, the rest reported
        doc["skipped"] = skipped
    # No path of the machine that made a result: logs relative to the workspace, the
    # cache as $VLLM_MATRIX_CACHE, ... (roots seen anywhere in it replaced everywhere).
    out: dict[str, Any] = portable.doc(doc, portable.Roots.here(results_dir.parent))
    return out


def _read(path: Path, label: str, skipped: list[dict[str, str]]) -> results.Envelope | None:
    """A result file, or None with the file and the reason added to ``skipped`` (one bad
    file never stops the report: its cell is shown as not answered)."""
    try:
        return results.read(path)
    except results.ResultFormatError as exc:
        reason = exc.reason
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror})"
    skipped.append({"file": label, "reason": reason})
    return None


def _blackwell(path: Path) -> dict[str, Any] | None:
    try:
        d: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d


def _row(cell_id: str, d: results.Envelope) -> dict[str, Any]:
    """One report row from a result envelope (verdict recomputed from its stages)."""
    findings = [f | {"stage": s["stage"]} for s in d["stages"] for f in s["findings"]]
    pre = results.preflight_details(d["stages"])
    mo, mo_ev = (pre.get("modelopt_fp8", ""), pre.get("modelopt_evidence", "")) if pre else ("", "")
    # Recomputed from the stages, so the report follows the current verdict rules.
    vv = results.verdict_of([results.StageResult.from_json(x) for x in d["stages"]])
    return {
        "id": cell_id,
        "cell": d["cell"],
        "verdict": vv.verdict,
        "rests_on": vv.rests_on,
        "depth": vv.depth,
        "cause": vv.cause,
        "fix": vv.fix,
        "evidence": list(vv.evidence),
        "findings": findings,
        "modelopt_fp8": mo or "",
        "modelopt_evidence": mo_ev or "",
        "machine": d["machine"],
        "stages": [
            {k: s[k] for k in ("stage", "status", "seconds", "summary", "log")} for s in d["stages"]
        ],
        "written": d["written"],
        "estimate": _estimate(d),
        # a newer run that ended in ERROR and left this (deeper) evidence standing
        "last_error": {k: v for k, v in d["last_error"].items() if k != "stages"}
        if d.get("last_error")
        else None,
    }


def _verdict_cell(r: dict[str, Any]) -> str:
    """**PASS**, or **PASS** (7 of 14 units; 7 need CUTLASS v4.0.0): what it rests on."""
    rests = r.get("rests_on") or ""
    return f"**{r['verdict']}**" + (f" ({rests})" if rests else "")


def _estimate(d: results.Envelope) -> dict[str, Any]:
    """The build-cost estimate the deepest stage holding one wrote (probe or build): one
    line per build kind, for the machine it ran on."""
    for s in reversed(d["stages"]):
        est = results.estimate_of(s)
        if est is not None and "wheel" in est:
            out: dict[str, Any] = {"cores": est.get("cores"), "wheel": est["wheel"]["line"]}
            if "partial" in est:
                out["partial"] = est["partial"]["line"]
                out["targets"] = est["partial"].get("targets", [])
            return out
    return {}


def last_run(r: dict[str, Any]) -> str:
    """'last run: ERROR at source, <when>: <cause>' for a row whose newer run failed."""
    le = r.get("last_error")
    if not le:
        return ""
    return f"last run: ERROR at {le['stage']}, {le['written']}: {le['cause']}"


def escape(text: str) -> str:
    """``text`` as one markdown table cell or list item: a newline or a ``|`` in a cell id,
    a cause or a fix would end the cell or the row."""
    return " ".join(str(text).split("\n")).replace("\r", " ").replace("|", "\\|")


def _table(rows: list[list[str]]) -> list[list[str]]:
    return [[escape(c) for c in r] for r in rows]


def _short(text: str, n: int = cause.WIDTH) -> str:
    return cause.shorten(text, n)


def _facts_note(r: dict[str, Any]) -> str:
    """' (documented)' when the cell's torch facts are not measured from its wheel."""
    doc_ = any(f["rule"] == "torch-facts" and f["level"] == "warn" for f in r["findings"])
    return " (facts documented, not measured here)" if doc_ else ""


def render_md(doc: dict[str, Any]) -> str:
    doc = portable.doc(doc)
    out = [
        "# vLLM build compatibility map",
        "",
        f"Generated by `nox -s report` from `results/*.json` ({doc['generated']}, "
        f"matrix `{doc['matrix']}`). Do not edit: rerun `nox -s matrix`.",
        "",
        "Verdicts: **PASS** built/compiled · **FAIL** failed at a stage (with its cause) · "
        "**PREDICTED-FAIL** a preflight rule says it cannot work (nothing compiled) · "
        "**PREFLIGHT-OK** every preflight rule passed, not compiled yet · "
        "**SKIPPED** cannot be tried on this machine · **UNKNOWN** not run · "
        "**ERROR** the tool or the machine failed (listed apart: no answer about vLLM).",
        "Depth says how far each cell got; Machine says where it ran. Cause quotes the "
        "compiler's first error as `file:line: message` where there is one; Notes holds the "
        "warnings of cells that passed (the details below have each one's fix).",
        "",
    ]
    if doc.get("merged"):  # merge: where the rows came from
        mg = doc["merged"]
        out += [
            f"Merged (`nox -s report -- --merge`) from {mg['files']} result files in "
            + ", ".join(f"`{d}`" for d in mg["dirs"])
            + (f"; {len(mg['refused'])} refused (listed at the end)." if mg["refused"] else "."),
            "",
        ]
    table = []
    for r in doc["cells"]:
        if r["verdict"] == Verdict.ERROR:
            continue
        c = r["cell"]
        why, notes = cause.cells(r)
        if r.get("last_error"):
            notes = "; ".join(x for x in (_short(last_run(r)), notes) if x)
        table.append(
            [
                f"`{r['id']}`",
                c["vllm"],
                c["torch"] + _facts_note(r),
                f"{c['cuda']} ({c['provider']})",
                c["python"],
                ", ".join(c["arch"]),
                _verdict_cell(r),
                depth_words(r["depth"]),
                why or "—",
                (_short(r["fix"]) if why else "") or "—",
                notes or "—",
                r["modelopt_fp8"] or "—",
                results.machine_label(r["machine"]) if r["machine"] else "—",
            ]
        )
    out.append(
        tabulate(
            _table(table),
            headers=[
                "cell",
                "vLLM",
                "torch",
                "CUDA",
                "Python",
                "arch",
                "verdict",
                "depth",
                "cause",
                "fix",
                "notes",
                "ModelOpt FP8",
                "machine",
            ],
            tablefmt="github",
            disable_numparse=True,  # "3.10" and "9.0" are versions, not numbers
        )
    )
    out += _errors_md(doc["cells"])
    others = doc.get("other_runs", [])
    if others:
        out += [
            "",
            "## Runs on other machines",
            "",
            f"Result files copied into `reports/{OTHER_DIR}/` from runs elsewhere "
            "(`nox -s current` / `--env current`: that machine's own torch and toolkit), "
            "verdicts recomputed like the matrix's.",
            "",
        ]
        table = [
            [
                f"`{r['id']}`",
                _verdict_cell(r),
                depth_words(r["depth"]),
                _short(
                    cause.once(
                        next(
                            (
                                s["summary"]
                                for s in r["stages"]
                                if s["stage"] == results.depth_stage(r["depth"])
                            ),
                            "",
                        )
                    )
                ),
                cause.cells(r)[0] or "—",
                cause.cells(r)[1] or "—",
                results.machine_label(r["machine"]) if r["machine"] else "—",
            ]
            for r in others
        ]
        out.append(
            tabulate(
                _table(table),
                headers=["run", "verdict", "depth", "what it did", "cause", "notes", "machine"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
    if doc.get("blackwell"):
        out += ["", "## Blackwell (sm_120): the cheapest toolchain per release", ""]
        out.append(readme.blackwell_releases(doc).rstrip())
    out += ["", "## Details", ""]
    for r in doc["cells"]:
        c = r["cell"]
        out.append(f"### `{escape(r['id'])}` — {r['verdict']}")
        if c.get("note"):
            out.append(f"_{c['note']}_")
        out.append("")
        if r["modelopt_fp8"]:
            ev = f" ({r['modelopt_evidence']})" if r["modelopt_evidence"] else ""
            out.append(f"- ModelOpt FP8: {r['modelopt_fp8']}{ev}")
        for s in r["stages"]:
            out.append(
                f"- **{s['stage']}** ({s['status']}, {s['seconds']:.2f}s): "
                f"{_short(cause.once(s['summary']), 300)}"
            )
        for f in r["findings"]:
            if f["level"] == "info":
                continue
            ev = "; ".join(f["evidence"][:3])
            extra = f" Evidence: {ev}." if ev else ""
            src = f" Source: {f['source']}." if f.get("source") else ""
            out.append(
                f"  - {f['level'].upper()} `{f['rule']}`: {f['message']}. "
                f"Fix: {f['fix'] or '—'}.{extra}{src}"
            )
        est = r.get("estimate") or {}
        if est:
            out.append(f"- build cost on {est['cores']} cores (estimate, before building):")
            out.append(f"  - full wheel: {est['wheel']}")
            if est.get("partial"):
                out.append(f"  - {' + '.join(est['targets'])} (serving): {est['partial']}")
        if r.get("last_error"):
            le = r["last_error"]
            out.append(
                f"- {escape(last_run(r))} (fix: {escape(le['fix']) or '—'}); the result above is "
                "the earlier run's, kept: an ERROR says nothing about vLLM"
            )
        if r["machine"]:
            out.append(
                f"- machine: {results.machine_label(r['machine'])}, "
                f"{r['machine'].get('os')}; written {r['written']}"
            )
        out += [f"- {n}" for n in r.get("notes", ())]  # merge: every machine's run
        out.append("")
    if doc.get("skipped"):  # unreadable result files: their cells are UNKNOWN above
        out += ["## Skipped result files", ""]
        out += [f"- `{escape(x['file'])}`: {escape(x['reason'])}" for x in doc["skipped"]]
        out.append("")
    refused = doc.get("merged", {}).get("refused", [])
    if refused:  # merge: files not read, each with its reason
        out += ["## Refused result files", ""]
        out += [f"- `{escape(x['file'])}`: {escape(x['reason'])}" for x in refused]
    return "\n".join(out).rstrip() + "\n"


def _errors_md(rows: list[dict[str, Any]]) -> list[str]:
    """Cells whose run failed for the tool's or the machine's reasons: no verdict on vLLM."""
    bad = [r for r in rows if r["verdict"] == Verdict.ERROR]
    if not bad:
        return []
    out = [
        "",
        "## Not answered: the tool or the machine failed",
        "",
        "These cells say nothing about vLLM: the run stopped on the tool's own failure or "
        "the machine's (a missing program, the package index, disk, memory). Fix the cause "
        "and rerun `nox -s matrix`.",
        "",
    ]
    table = [
        [f"`{r['id']}`", r["depth"], _short(r["cause"]) or "—", _short(r["fix"]) or "—"]
        for r in bad
    ]
    out.append(
        tabulate(
            _table(table),
            headers=["cell", "stopped at", "what broke", "fix"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    return out


def portable_copies(other_dir: Path, workspace: Path) -> list[Path]:
    """Rewrite the result files copied from other machines without that machine's paths
    (they are committed beside the report); the files changed."""
    paths = sorted(other_dir.glob("*.json")) if other_dir.is_dir() else []
    docs = {}
    for p in paths:
        try:  # an unreadable copy is left as it is: collect names it as skipped
            docs[p] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
    roots = portable.Roots.here(workspace).learn(portable.strings(list(docs.values())))
    changed = []
    for p, d in docs.items():
        new = portable.doc(d, roots)
        if new != d:
            atomic_write_text(p, json.dumps(new, indent=1) + "\n")
            changed.append(p)
    return changed


def write(
    matrix: Matrix,
    results_dir: Path,
    reports_dir: Path,
    echo: Callable[[str], None] | None = None,
) -> tuple[Path, Path]:
    j, m, _ = write_report(matrix, results_dir, reports_dir, echo)
    return j, m


def write_report(
    matrix: Matrix,
    results_dir: Path,
    reports_dir: Path,
    echo: Callable[[str], None] | None = None,
) -> tuple[Path, Path, list[dict[str, str]]]:
    """compat.json and compat.md from ``results_dir``, and the result files skipped (each
    ``{"file", "reason"}``: not UTF-8, not JSON, another schema ...; named in the report)."""
    portable_copies(reports_dir / OTHER_DIR, results_dir.parent)
    doc = collect(matrix, results_dir, reports_dir / OTHER_DIR)
    j, m = write_doc(doc, reports_dir, results_dir / SCRATCH, echo)
    return j, m, list(doc.get("skipped", []))


# Where a render that would drop committed evidence goes instead (results/ is not tracked).
SCRATCH = "unpublished-reports"


def _depth_rank(row: dict[str, Any]) -> int:
    if row.get("verdict") in (None, "UNKNOWN", "ERROR"):
        return -1
    stage = results.depth_stage(str(row.get("depth", "")))
    return results.STAGE_ORDER.index(stage) if stage in results.STAGE_ORDER else -1


def lost_evidence(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What rendering ``new`` over ``old`` (the report on disk) would throw away: a cell
    answered in ``old`` that ``new`` leaves unanswered or answers from shallower evidence,
    a run of another machine ``new`` lacks. Cells no longer in the matrix are not counted:
    taking a cell out of matrix.toml is a choice, not a loss."""
    now = {r["id"]: r for r in new.get("cells", [])}
    lost = [
        f"{r['id']} ({r['verdict']} at {r['depth']})"
        for r in old.get("cells", [])
        if r["id"] in now and _depth_rank(now[r["id"]]) < _depth_rank(r)
    ]
    runs = {r["id"] for r in new.get("other_runs", [])}
    lost += [f"{r['id']} (run elsewhere)" for r in old.get("other_runs", []) if r["id"] not in runs]
    if old.get("blackwell") and not new.get("blackwell"):
        lost.append("the Blackwell table (results/blackwell.json)")
    return lost


def _on_disk(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) and d.get("schema") == SCHEMA else {}


def write_doc(
    doc: dict[str, Any],
    reports_dir: Path,
    scratch: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> tuple[Path, Path]:
    """compat.json, compat.md and blackwell.md from ``doc``. Never over a report on disk
    that holds evidence ``doc`` lacks: then into ``scratch`` (default
    results/unpublished-reports), saying so; the paths written are returned."""
    old = _on_disk(reports_dir / "compat.json")
    if not doc.get("blackwell") and old.get("blackwell"):
        # The Blackwell table is `vllm-matrix blackwell`'s (results/blackwell.json), not the
        # cells': a run of the matrix that did not make one (a fresh clone's) keeps the one
        # on disk rather than rendering into the scratch directory for its lack.
        doc = doc | {"blackwell": old["blackwell"]}
    lost = lost_evidence(old, doc)
    if lost:
        target = scratch or reports_dir.parent / "results" / SCRATCH
        say = echo or (lambda m: print(m, file=sys.stderr, flush=True))
        say(
            f"not rendering over {reports_dir.name}/compat.md: it holds evidence these results "
            f"lack ({len(lost)}: {', '.join(lost[:3])}{' …' if len(lost) > 3 else ''}); "
            f"rendered into {target} instead. To publish, rerun those cells here or merge "
            "the results they came from (nox -s report -- --merge DIR ...)"
        )
        reports_dir = target
    j, m = reports_dir / "compat.json", reports_dir / "compat.md"
    atomic_write_text(j, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(m, render_md(doc))
    # the Blackwell section the README links (the README itself is never generated)
    atomic_write_text(reports_dir / "blackwell.md", readme.render_md(doc))
    return j, m
