"""Results: one versioned JSON envelope per cell, written atomically.

results/<cell-id>.json = {schema, version, cell, machine, stages: [StageResult...], verdict}
The report is rendered from these files only (reports/compat.{json,md}).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vllm_matrix.infra import portable, proc, programs
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.config import Cell

SCHEMA = "vllm-matrix/cell-result"
SCHEMA_VERSION = 1

# Stage statuses. ERROR: the tool or the machine failed (a missing program, the index
# unreachable, disk full, a corrupt cache entry, a bug) -- never a fact about vLLM.
PASS, FAIL, WARN, SKIP, PREDICTED_FAIL, INTERRUPTED, ERROR = (
    "pass",
    "fail",
    "warn",
    "skip",
    "predicted-fail",
    "interrupted",
    "error",
)
STATUSES = (PASS, FAIL, WARN, SKIP, PREDICTED_FAIL, INTERRUPTED, ERROR)

# Cell verdicts (design.md), plus PREFLIGHT-OK: every rule passed, nothing compiled yet.
VERDICTS = ("PASS", "FAIL", "PREDICTED-FAIL", "PREFLIGHT-OK", "SKIPPED", "ERROR", "UNKNOWN")

STAGE_ORDER = (
    "source",
    "facts",
    "preflight",
    "toolkit",
    "env",
    "patches",
    "probe",
    "build",
    "audit",
    "smoke",
    "gpu",
    "model",
)
COMPILED = STAGE_ORDER[STAGE_ORDER.index("probe") :]  # stages whose verdicts come from compiling


@dataclass(frozen=True)
class Finding:
    """One preflight rule's outcome (or one classified failure)."""

    rule: str
    level: str  # "fail" | "warn" | "skip" | "info"
    message: str
    fix: str = ""
    evidence: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class StageResult:
    stage: str
    status: str
    seconds: float
    summary: str
    findings: tuple[Finding, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = [asdict(f) for f in self.findings]
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> StageResult:
        findings = tuple(
            Finding(**{**f, "evidence": tuple(f.get("evidence", ()))})
            for f in d.get("findings", ())
        )
        return StageResult(
            stage=d["stage"],
            status=d["status"],
            seconds=d["seconds"],
            summary=d["summary"],
            findings=findings,
            details=d.get("details", {}),
            log=d.get("log"),
        )


@dataclass(frozen=True)
class Verdict:
    verdict: str
    depth: str  # furthest stage reached
    cause: str
    fix: str
    evidence: tuple[str, ...]
    # what a PASS rests on where it is less than it set out to check:
    # "7 of 14 units; 7 need CUTLASS v4.0.0" (a probe that compiled part of its selection)
    rests_on: str = ""

    @property
    def label(self) -> str:
        """The verdict as shown: ``PASS (7 of 14 units; 7 need CUTLASS v4.0.0)``."""
        return f"{self.verdict} ({self.rests_on})" if self.rests_on else self.verdict


def status_of(findings: Iterable[Finding]) -> str:
    """A stage's status from its findings: FAIL if any fails, else WARN if any warns."""
    levels = {f.level for f in findings}
    return FAIL if "fail" in levels else WARN if "warn" in levels else PASS


def depth_stage(depth: str) -> str:
    """The stage a verdict's depth names: ``gpu (partial: targets _C)`` -> ``gpu``."""
    return depth.partition(" ")[0]


def ran(s: StageResult) -> bool:
    """False for a stage that is recorded but did nothing (e.g. --no-probe: the probe is
    there, nothing was compiled); a result written before ``not_run`` existed says so only
    in its summary."""
    return not (s.details.get("not_run") or s.summary.startswith("not run"))


def verdict_of(stages: list[StageResult]) -> Verdict:
    """The cell's verdict: the first stage that stopped it decides; else how far it got."""
    if not stages:
        return Verdict("UNKNOWN", "none", "not run yet", "", ())
    v = _verdict_of(stages)
    # A partial build (--targets) is never shown as a wheel: its depth says so.
    cut = next(
        (s.details["partial"] for s in stages if s.stage == "build" and "partial" in s.details),
        None,
    )
    if cut is not None and v.depth in ("build", "audit", "smoke", "gpu", "model"):
        v = replace(v, depth=f"{v.depth} (partial: targets {', '.join(cut['targets'])})")
    if v.verdict == "PASS" and depth_stage(v.depth) == "probe":
        probe = next((s for s in stages if s.stage == "probe"), None)
        v = replace(v, rests_on=probe_coverage(probe.details) if probe else "")
    return v


_NEEDS = re.compile(r"not probed: needs (.+?)(?: \(|:|$)")


def probe_coverage(details: Mapping[str, Any]) -> str:
    """ "7 of 14 units; 7 need CUTLASS v4.0.0" where a probe compiled fewer units than it
    selected (a unit needing an absent external source or a generated file is not
    compiled); "" where it compiled them all."""
    units = list(details.get("units", []))
    compiled = [u for u in units if u.get("status") in ("pass", "fail", "timeout")]
    if not units or len(compiled) == len(units):
        return ""
    why: dict[str, int] = {}
    for u in units:
        if u in compiled:
            continue
        m = _NEEDS.search(str(u.get("note") or ""))
        need = m.group(1) if m else "not compiled"
        need = re.sub(r"^cutlass\b", "CUTLASS", need)
        why[need] = why.get(need, 0) + 1
    parts = [
        f"{n} {w}" if w == "not compiled" else f"{n} need{'s' if n == 1 else ''} {w}"
        for w, n in why.items()
    ]
    return f"{len(compiled)} of {len(units)} units; " + "; ".join(parts)


def _verdict_of(stages: list[StageResult]) -> Verdict:
    depth = stages[-1].stage
    # A compile that ran (--force past a prediction) outranks the prediction.
    compiled_fail = next((s for s in stages if s.stage in COMPILED and s.status == FAIL), None)
    for s in stages:
        if s.status == PREDICTED_FAIL and compiled_fail is not None:
            s = compiled_fail
        if s.status in (FAIL, PREDICTED_FAIL, SKIP, INTERRUPTED, ERROR):
            # The cause is the findings of the level that decided the status.
            level = {SKIP: "skip", ERROR: "error"}.get(s.status, "fail")
            bad = [f for f in s.findings if f.level == level]
            cause = "; ".join(f.message for f in bad) or s.summary
            fix = "; ".join(dict.fromkeys(f.fix for f in bad if f.fix))
            # One advice (pipeline/advice.py) where the stage stored it: it replaces the
            # rules' own fixes, which each see one rule.
            if s.status == PREDICTED_FAIL and s.details.get("advice", {}).get("text"):
                fix = str(s.details["advice"]["text"])
            ev = tuple(e for f in bad for e in f.evidence)
            name = {
                FAIL: "FAIL",
                PREDICTED_FAIL: "PREDICTED-FAIL",
                SKIP: "SKIPPED",
                INTERRUPTED: "UNKNOWN",
                ERROR: "ERROR",
            }[s.status]
            # What compiled stands when a later stage could not run (SKIPPED: not
            # obtainable here, e.g. the build's sources; UNKNOWN: interrupted): the probe's
            # PASS is still the deepest evidence, and the cause says what stopped it.
            passed = [
                p.stage
                for p in stages[: stages.index(s)]
                if p.stage in COMPILED and p.status in (PASS, WARN) and ran(p)
            ]
            if s.status in (SKIP, INTERRUPTED) and passed:
                stopped = "interrupted" if s.status == INTERRUPTED else "skipped"
                return Verdict("PASS", passed[-1], f"{s.stage} {stopped}: {cause}", fix, ev)
            # Nothing compiled because this machine lacks the toolkit, torch or GPU: the
            # answer is still every rule's (design.md: answers are about the asker's
            # machine); what is missing here only limits the depth.
            pre = next((p for p in stages[: stages.index(s)] if p.stage == "preflight"), None)
            if s.status == SKIP and pre is not None and pre.status in (PASS, WARN):
                return Verdict("PREFLIGHT-OK", "preflight", f"not compiled here: {cause}", fix, ev)
            # A prediction's depth is how far the cell got (--force may have gone on).
            return Verdict(name, depth if s.status == PREDICTED_FAIL else s.stage, cause, fix, ev)
    warns = [f for s in stages for f in s.findings if f.level == "warn"]
    cause = "; ".join(f.message for f in warns)
    fix = "; ".join(dict.fromkeys(f.fix for f in warns if f.fix))
    name = "PASS" if depth in COMPILED else "PREFLIGHT-OK"
    return Verdict(name, depth, cause, fix, tuple(e for f in warns for e in f.evidence))


def machine() -> dict[str, Any]:
    """What ran it: enough to say "on what machine" in the report."""
    gpu = None
    smi = programs.find("nvidia-smi")
    if smi:
        out = proc.output_of([smi, "--query-gpu=name", "--format=csv,noheader"], timeout=20)
        gpu = _gpus(out.strip()) if out and out.strip() else None
    mem = 0
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "mem_gib": round(mem / 2**30),
        "gpu": gpu,
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
        if hasattr(platform, "freedesktop_os_release")
        else platform.system(),
        "python": platform.python_version(),
    }


def _gpus(text: str) -> str:
    """nvidia-smi's one line per GPU as one label: "2 x NVIDIA H200"."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if len(lines) > 1 and len(set(lines)) == 1:
        return f"{len(lines)} x {lines[0]}"
    return ", ".join(lines)


def machine_label(m: dict[str, Any]) -> str:
    gpu = _gpus(m.get("gpu") or "no GPU")
    return f"{m.get('arch')} {m.get('cpus')} cores {m.get('mem_gib')} GiB, {gpu}"


def verdict_json(stages: list[StageResult]) -> dict[str, Any]:
    """The envelope's ``verdict``: ``verdict_of(stages)`` as JSON."""
    v = verdict_of(stages)
    return asdict(v) | {"evidence": list(v.evidence), "label": v.label}


def envelope(cell: Cell, stages: list[StageResult], mach: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cell": cell.to_json(),
        "machine": mach,
        "stages": [s.to_json() for s in stages],
        "verdict": verdict_json(stages),
    }


def write(
    results_dir: Path, cell: Cell, stages: list[StageResult], mach: dict[str, Any] | None = None
) -> Path:
    path = results_dir / f"{cell.id}.json"
    # Paths as the report shows them (results/logs/..., $VLLM_MATRIX_CACHE/...).
    roots = portable.Roots.here(results_dir.parent)
    doc = portable.doc(envelope(cell, stages, mach or machine()), roots)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


class ResultFormatError(ValueError):
    pass


def read(path: Path) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(path.read_text())
    if d.get("schema") != SCHEMA:
        raise ResultFormatError(f"{path}: not a vllm-matrix result (schema {d.get('schema')!r})")
    if d.get("version") != SCHEMA_VERSION:
        raise ResultFormatError(
            f"{path}: result version {d.get('version')}, expected {SCHEMA_VERSION}; rerun the cell"
        )
    return d
