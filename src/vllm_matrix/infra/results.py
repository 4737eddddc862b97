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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast, overload

from vllm_matrix.infra import portable
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.config import Cell

SCHEMA = "vllm-matrix/cell-result"
SCHEMA_VERSION = 1


class Status(StrEnum):
    """A stage's status. ERROR: the tool or the machine failed (a missing program, the index
    unreachable, disk full, a corrupt cache entry, a bug) -- never a fact about vLLM. A
    member is its value (``Status.PASS == "pass"``): JSON holds the bare string."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    PREDICTED_FAIL = "predicted-fail"
    INTERRUPTED = "interrupted"
    ERROR = "error"


class Verdict(StrEnum):
    """A cell's verdict (docs/how-it-decides.md lists them), plus PREFLIGHT-OK: every rule
    passed, nothing compiled yet."""

    PASS = "PASS"
    FAIL = "FAIL"
    PREDICTED_FAIL = "PREDICTED-FAIL"
    PREFLIGHT_OK = "PREFLIGHT-OK"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


# The statuses by their short names (stages import them).
PASS = Status.PASS
FAIL = Status.FAIL
WARN = Status.WARN
SKIP = Status.SKIP
PREDICTED_FAIL = Status.PREDICTED_FAIL
INTERRUPTED = Status.INTERRUPTED
ERROR = Status.ERROR
STATUSES = tuple(Status)
VERDICTS = tuple(Verdict)

# A finding's level: a stage's status follows from its findings' levels (status_of).
Level = Literal["fail", "warn", "skip", "info", "error"]


class PlanNames(Sequence[str]):
    """Stage names as PLAN (pipeline/plan.py) has them, which registers them on import.

    infra may not import the pipeline, and the tuple kept here before restated PLAN. Read
    before PLAN registered (a process that never imported vllm_matrix.pipeline.plan), it
    raises instead of answering from an empty list.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._names: tuple[str, ...] = ()

    def _get(self) -> tuple[str, ...]:
        if not self._names:
            raise RuntimeError(
                f"results.{self._what} is PLAN's and was read before pipeline/plan.py "
                "registered it: import vllm_matrix.pipeline.plan first (a bug in the caller)"
            )
        return self._names

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self._get() == tuple(other)

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return f"PlanNames({self._names!r})"


STAGE_ORDER = PlanNames("STAGE_ORDER")  # every stage, in PLAN's order
COMPILED = PlanNames("COMPILED")  # the stages whose PASS is evidence from compiling


def register_plan(order: Sequence[str], compiled: Sequence[str]) -> None:
    """PLAN's stage names and its compiling ones (pipeline/plan.py calls it, once)."""
    STAGE_ORDER._names, COMPILED._names = tuple(order), tuple(compiled)


# The result file as JSON (``envelope``; ``read`` checks one): what other modules read.
class FindingDoc(TypedDict):
    rule: str
    level: Level
    message: str
    fix: str
    evidence: list[str]
    source: str


class StageDoc(TypedDict):
    stage: str
    status: Status
    seconds: float
    summary: str
    findings: list[FindingDoc]
    details: dict[str, Any]  # each stage's own; the ones read elsewhere are typed below
    log: str | None


class VerdictDoc(TypedDict):
    verdict: Verdict
    depth: str
    cause: str
    fix: str
    evidence: list[str]
    rests_on: str
    label: str


class ErrorRecord(TypedDict):
    """A newer run that ended in ERROR, kept beside older, deeper evidence."""

    verdict: Verdict
    stage: str
    cause: str
    fix: str
    written: str
    stages: list[StageDoc]


class Envelope(TypedDict):
    schema: str
    version: int
    written: str
    cell: dict[str, Any]  # Cell.to_json()
    machine: dict[str, Any] | None  # machine()
    stages: list[StageDoc]
    verdict: VerdictDoc
    last_error: NotRequired[ErrorRecord]


# Stage details that other modules read (the report, the map, the advice).
class AdviceDoc(TypedDict):
    """pipeline/advice.py's ``Advice.to_json()``: the one fix a predicted failure shows."""

    have: dict[str, Any]
    ok_as_is: bool
    options: list[dict[str, Any]]
    tried: str
    text: str


class PreflightDetails(TypedDict):
    """The preflight stage's ``details`` (report/compat.py reads the ModelOpt column)."""

    advice: NotRequired[AdviceDoc]  # only for PREDICTED-FAIL
    modelopt_fp8: str
    modelopt_evidence: str
    modelopt_config: dict[str, Any]
    modelopt_fp8_gemm: list[dict[str, Any]]


class EstimateLine(TypedDict):
    line: str


class PartialEstimateLine(EstimateLine):
    targets: NotRequired[list[str]]


class EstimateDoc(TypedDict, total=False):
    """A probe's or build's ``details["estimate"]`` (pipeline/estimate.py): the cost of a
    build here, one line per kind; ``error`` where the model could not be evaluated."""

    cores: int
    mem_gib: float | None
    front_end: dict[str, Any]
    uncertainty: Any
    wheel: EstimateLine
    partial: PartialEstimateLine
    error: str


class ProbeUnitDoc(TypedDict, total=False):
    """One unit of a probe's ``details["units"]`` (stages/probe: UnitResult.to_json())."""

    path: str
    kind: str  # "cuda" | "cpp"
    status: str  # the unit's: "pass" | "fail" | "timeout" | "not-probed" | "not-run"
    seconds: float
    front_end_s: float
    # CPU seconds of its compilers, all steps / the front end's (wait4); absent before
    cpu_s: float
    front_end_cpu_s: float
    front_end_cache: str  # "hit" | "miss" | ""
    # a front end run in one translation unit with other units: {units, seconds, log}
    front_end_group: dict[str, Any] | None
    note: str


class ProbeDetails(TypedDict, total=False):
    """The probe stage's ``details``, as far as other modules read them (the estimate, the
    reuse of a passed probe, the verdict's coverage)."""

    units: list[ProbeUnitDoc]
    cpus: int | None
    # the process's children's CPU over the probe: beside another cell's probe it holds
    # that probe's compilers too (an upper bound); units_cpu_seconds: its units' own
    cpu_seconds: float
    units_cpu_seconds: float
    inputs: dict[str, Any]  # pipeline/reuse.py: what the probe ran on
    reused_from: str  # when the probe that passed on the same inputs was written
    estimate: EstimateDoc


class ToolkitDetails(TypedDict):
    """The toolkit stage's ``details`` (stages/toolkit: ``Toolkit.to_json()``)."""

    provider: str
    version: str
    full_version: str
    root: str
    nvcc: str
    archs: list[str]
    max_gcc: int | None
    notes: list[str]


class TorchEnvDoc(TypedDict):
    """stages/env: ``TorchEnv.to_json()``."""

    python: str
    torch: str
    variant: str
    root: str
    python_exe: str
    site: str
    torch_version: str
    torch_cuda: str | None


class FixupDoc(TypedDict):
    name: str
    value: str
    reason: str


class FixupProblemDoc(TypedDict):
    message: str
    fix: str


class FixupsDoc(TypedDict):
    """stages/env/fixups.py: ``Fixups.to_json()`` (commands/pixi.py reads ``set``)."""

    set: list[FixupDoc]
    problems: list[FixupProblemDoc]


class EnvDetails(TypedDict):
    """The env stage's ``details``."""

    env: TorchEnvDoc
    fixups: FixupsDoc


class AppliedPatchDoc(TypedDict):
    """stages/patches.py: ``Applied.to_json()``."""

    patch: str
    file: str
    status: str
    upstream: str


class PatchesDetails(TypedDict):
    """The patches stage's ``details``."""

    applied: list[AppliedPatchDoc]


class PartialBuildDoc(TypedDict, total=False):
    """A partial build's ``details["partial"]`` (stages/compile: the build's, the audit's)."""

    targets: list[str]  # the CMake targets built
    out: str
    extensions: list[str]  # the built .so files (plan.do_build hands them on)
    size_bytes: int


class InstallableDoc(TypedDict, total=False):
    """A partial build's ``details["installable"]`` (stages/compile/installable.py), what
    the model stage serves from."""

    path: str
    extensions: list[str]  # relative to ``path``
    standins: list[str]
    attention: str


class BuildSourceDoc(TypedDict):
    pin: str | None
    path: str
    origin: str


class BuildDetails(TypedDict, total=False):
    """The build stage's ``details`` (stages/compile), as far as other modules read them:
    the pipeline (the wheel, the extensions, the installable), the verdict (``partial``),
    the build-cost study (``resources``, ``targets``)."""

    work: str
    log: str
    wheel: str  # a full build's wheel
    partial: PartialBuildDoc  # a partial build's (``--targets``)
    jobs: dict[str, Any]  # the JobPlan: MAX_JOBS, NVCC_THREADS and why
    steps: dict[str, Any]  # how far each step got (``resumed``: a rerun went on)
    configure: dict[str, Any]
    resources: dict[str, Any]
    targets: dict[str, dict[str, Any]]  # per CMake target: its edges and times
    progress: dict[str, Any]  # an interrupted build: how far it got
    sources: dict[str, BuildSourceDoc]
    estimate: EstimateDoc
    installable: InstallableDoc
    standins: dict[str, str]
    not_run: bool


class AuditDetails(TypedDict, total=False):
    """The audit stage's ``details`` (stages/audit.py for a wheel, stages/compile/partial.py
    for a partial build; studies/rejudge.py reads the FP8 GEMM objects again)."""

    wheel: str
    version: str
    partial: PartialBuildDoc
    targets: list[str]  # the cell's arches
    cuobjdump: str
    objects: list[dict[str, Any]]
    coverage: dict[str, Any]
    fp8_gemm_objects: list[dict[str, Any]]


class SmokeDetails(TypedDict, total=False):
    """The smoke stage's ``details`` (stages/audit.py ``smoke``)."""

    site: str
    driver: Any
    torch: str | None
    cuda_available: bool | None
    extensions: Any
    ops: Any
    import_vllm: dict[str, Any]
    not_run: list[str]  # checks that could not run here (results.ran reads it)


class GpuDetails(TypedDict, total=False):
    """The gpu stage's ``details`` (stages/gpu.py): the worker's JSON, plus ``gpus``."""

    gpus: dict[str, Any]


class ModelDetails(TypedDict, total=False):
    """The model stage's ``details`` (stages/model/modelstage.py ``judge``, plus the GPU)."""

    fp8_vs_bf16: dict[str, Any]
    tolerance: dict[str, Any]
    vllm: Any
    gpu: Any
    load_seconds: dict[str, Any]
    throughput: dict[str, Any]
    gpu_name: str


def probe_details(details: Mapping[str, Any]) -> ProbeDetails:
    """A probe stage's details, typed (a stage result's details are plain JSON)."""
    return cast(ProbeDetails, details)


def as_details(typed: PreflightDetails | EstimateDoc) -> dict[str, Any]:
    """Typed details as a StageResult's ``details`` (a plain dict: JSON as it is)."""
    return cast(dict[str, Any], typed)


def preflight_details(stages: Iterable[StageDoc]) -> PreflightDetails | None:
    """The preflight stage's details in a result's stages (None: no preflight ran)."""
    found = next((s["details"] for s in stages if s["stage"] == "preflight"), None)
    return cast(PreflightDetails, found) if found is not None else None


def estimate_of(stage: StageDoc) -> EstimateDoc | None:
    """A stage's build-cost estimate (the probe and the build write one)."""
    est = stage.get("details", {}).get("estimate")
    return cast(EstimateDoc, est) if isinstance(est, dict) else None


@dataclass(frozen=True)
class Finding:
    """One preflight rule's outcome (or one classified failure)."""

    rule: str
    level: Level
    message: str
    fix: str = ""
    evidence: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class StageResult:
    stage: str
    status: Status
    seconds: float
    summary: str
    findings: tuple[Finding, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    def to_json(self) -> StageDoc:
        d = asdict(self)
        d["findings"] = [asdict(f) for f in self.findings]
        return cast(StageDoc, d)

    @staticmethod
    def from_json(d: StageDoc | dict[str, Any]) -> StageResult:
        findings = tuple(
            Finding(**{**f, "evidence": tuple(f.get("evidence", ()))})
            for f in d.get("findings", ())
        )
        return StageResult(
            stage=d["stage"],
            status=Status(d["status"]),
            seconds=d["seconds"],
            summary=d["summary"],
            findings=findings,
            details=d.get("details", {}),
            log=d.get("log"),
        )


@dataclass(frozen=True)
class CellVerdict:
    """A cell's verdict with what it rests on (``verdict_of``)."""

    verdict: Verdict
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


def status_of(findings: Iterable[Finding]) -> Status:
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


def verdict_of(stages: list[StageResult]) -> CellVerdict:
    """The cell's verdict: the first stage that stopped it decides; else how far it got."""
    if not stages:
        return CellVerdict(Verdict.UNKNOWN, "none", "not run yet", "", ())
    v = _verdict_of(stages)
    # A partial build (--targets) is never shown as a wheel: its depth says so.
    cut = next(
        (
            cast(BuildDetails, s.details)["partial"]
            for s in stages
            if s.stage == "build" and "partial" in s.details
        ),
        None,
    )
    built_on = tuple(STAGE_ORDER[STAGE_ORDER.index("build") :])  # the build and what uses it
    if cut is not None and v.depth in built_on:
        v = replace(v, depth=f"{v.depth} (partial: targets {', '.join(cut['targets'])})")
    # A build compiled on another machine and carried here (stages/compile/carried.py).
    carried = next(
        (s.details["carried"] for s in stages if s.stage == "build" and "carried" in s.details),
        None,
    )
    if carried is not None and depth_stage(v.depth) in built_on:
        v = replace(v, rests_on=f"built on {machine_label(carried.get('machine'))}; carried here")
    if v.verdict == Verdict.PASS and depth_stage(v.depth) == "probe":
        probe = next((s for s in stages if s.stage == "probe"), None)
        v = replace(v, rests_on=probe_coverage(probe.details) if probe else "")
    return v


_NEEDS = re.compile(r"not probed: needs (.+?)(?: \(|:|$)")


def probe_coverage(details: Mapping[str, Any]) -> str:
    """ "7 of 14 units; 7 need CUTLASS v4.0.0" where a probe compiled fewer units than it
    selected (a unit needing an absent external source or a generated file is not
    compiled); "" where it compiled them all."""
    units = list(probe_details(details).get("units", []))
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


def _one_per_rule(findings: list[Finding]) -> str:
    """The findings' messages, one per rule: a probe finds the same cause in many units
    (vLLM 0.8.5 on sm_120 with nvcc 12.4: four units, one sentence); the others are counted,
    and named in the evidence."""
    by_rule: dict[str, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    return "; ".join(
        same[0].message + (f" (and {len(same) - 1} more unit(s) alike)" if len(same) > 1 else "")
        for same in by_rule.values()
    )


def _verdict_of(stages: list[StageResult]) -> CellVerdict:
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
            cause = _one_per_rule(bad) or s.summary
            fix = "; ".join(dict.fromkeys(f.fix for f in bad if f.fix))
            # One advice (pipeline/advice.py) where the stage stored it: it replaces the
            # rules' own fixes, which each see one rule.
            stored = cast(PreflightDetails, s.details)
            if s.status == PREDICTED_FAIL and "advice" in stored and stored["advice"].get("text"):
                fix = str(stored["advice"]["text"])
            ev = tuple(e for f in bad for e in f.evidence)
            name = {
                FAIL: Verdict.FAIL,
                PREDICTED_FAIL: Verdict.PREDICTED_FAIL,
                SKIP: Verdict.SKIPPED,
                INTERRUPTED: Verdict.UNKNOWN,
                ERROR: Verdict.ERROR,
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
                return CellVerdict(
                    Verdict.PASS, passed[-1], f"{s.stage} {stopped}: {cause}", fix, ev
                )
            # Nothing compiled because this machine lacks the toolkit, torch or GPU: the
            # answer is still every rule's (answers are about the asker's
            # machine); what is missing here only limits the depth.
            pre = next((p for p in stages[: stages.index(s)] if p.stage == "preflight"), None)
            if s.status == SKIP and pre is not None and pre.status in (PASS, WARN):
                return CellVerdict(
                    Verdict.PREFLIGHT_OK, "preflight", f"not compiled here: {cause}", fix, ev
                )
            # A prediction's depth is how far the cell got (--force may have gone on).
            where = depth if s.status == PREDICTED_FAIL else s.stage
            return CellVerdict(name, where, cause, fix, ev)
    warns = [f for s in stages for f in s.findings if f.level == "warn"]
    cause = "; ".join(f.message for f in warns)
    fix = "; ".join(dict.fromkeys(f.fix for f in warns if f.fix))
    name = Verdict.PASS if depth in COMPILED else Verdict.PREFLIGHT_OK
    return CellVerdict(name, depth, cause, fix, tuple(e for f in warns for e in f.evidence))


def machine(gpus: Sequence[str]) -> dict[str, Any]:
    """What ran it: enough to say "on what machine" in the report. ``gpus``: each GPU's
    name (``gpu.info.names()``: the GPU query is gpu/info's, which infra may not import)."""
    gpu = _gpus("\n".join(gpus)) if any(g.strip() for g in gpus) else None
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


def machine_label(m: Mapping[str, Any] | None) -> str:
    m = m or {}
    gpu = _gpus(m.get("gpu") or "no GPU")
    return f"{m.get('arch')} {m.get('cpus')} cores {m.get('mem_gib')} GiB, {gpu}"


def verdict_json(stages: list[StageResult]) -> VerdictDoc:
    """The envelope's ``verdict``: ``verdict_of(stages)`` as JSON."""
    v = verdict_of(stages)
    return VerdictDoc(
        verdict=v.verdict,
        depth=v.depth,
        cause=v.cause,
        fix=v.fix,
        evidence=list(v.evidence),
        rests_on=v.rests_on,
        label=v.label,
    )


def envelope(
    cell: Cell,
    stages: list[StageResult],
    mach: dict[str, Any],
    last_error: ErrorRecord | None = None,
) -> Envelope:
    doc = Envelope(
        schema=SCHEMA,
        version=SCHEMA_VERSION,
        written=now(),
        cell=cell.to_json(),
        machine=mach,
        stages=[s.to_json() for s in stages],
        verdict=verdict_json(stages),
    )
    if last_error is not None:
        doc["last_error"] = last_error
    return doc


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def error_record(stages: list[StageResult], when: str | None = None) -> ErrorRecord:
    """``last_error`` of a result that kept older, deeper evidence: the newer run that ended
    in ERROR (its stage, cause, fix, when, and its stages)."""
    v = verdict_of(stages)
    return ErrorRecord(
        verdict=v.verdict,
        stage=v.depth,
        cause=v.cause,
        fix=v.fix,
        written=when or now(),
        stages=[s.to_json() for s in stages],
    )


def write(
    results_dir: Path,
    cell: Cell,
    stages: list[StageResult],
    mach: dict[str, Any],
    last_error: ErrorRecord | None = None,
) -> Path:
    """``last_error``: a newer run that ended in ERROR, kept beside ``stages`` (the older,
    deeper evidence it must not erase)."""
    path = results_dir / f"{cell.id}.json"
    # Paths as the report shows them (results/logs/..., $VLLM_MATRIX_CACHE/...).
    roots = portable.Roots.here(results_dir.parent)
    doc = portable.doc(envelope(cell, stages, mach, last_error), roots)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


class ResultFormatError(ValueError):
    """A result file that cannot be used: ``reason`` says why, without the path."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


# What a result file may hold (a report renders every id and status it reads: a newline or
# a `|` in an id splits the markdown table, a 200,000-character id bloats it).
MAX_FILE_BYTES = 64 * 2**20
MAX_ID = 200
MAX_TEXT = 20_000  # a stage summary or a finding's message
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]*")
_STAGE = re.compile(r"[a-z][a-z0-9_-]{0,39}")


def _short_repr(value: object) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def check(d: object) -> Envelope:
    """``d`` as a cell result envelope, or a ResultFormatError saying what is wrong: the
    schema and its version, then every field a report reads (types, the status enum, a
    cell id that renders as one table cell, sizes)."""

    def bad(reason: str) -> ResultFormatError:
        return ResultFormatError(reason)

    if not isinstance(d, dict):
        raise bad("not a vllm-matrix result (not a JSON object)")
    if d.get("schema") != SCHEMA:
        raise bad(
            f"not a vllm-matrix result (schema {_short_repr(d.get('schema'))}, not {SCHEMA!r})"
        )
    if d.get("version") != SCHEMA_VERSION:
        raise bad(
            f"result schema version {_short_repr(d.get('version'))}, this vllm-matrix reads "
            f"{SCHEMA_VERSION}: rerun the cell with this version"
        )
    cell = d.get("cell")
    if not isinstance(cell, dict):
        raise bad("malformed result: 'cell' is not an object")
    cid = cell.get("id")
    if not isinstance(cid, str) or not cid:
        raise bad("malformed result: cell.id is not a string")
    if len(cid) > MAX_ID:
        raise bad(f"malformed result: cell.id is {len(cid)} characters (at most {MAX_ID})")
    if not _ID.fullmatch(cid):
        raise bad(
            f"malformed result: cell.id {_short_repr(cid)} holds a character a cell id never "
            "has (letters, digits and . _ + - only)"
        )
    for k in ("vllm", "torch", "cuda", "provider", "python"):
        v = cell.get(k)
        if not isinstance(v, str) or len(v) > MAX_ID or "\n" in v or "|" in v:
            raise bad(f"malformed result: cell.{k} {_short_repr(v)} is not a short string")
    arch = cell.get("arch")
    if not isinstance(arch, list) or not all(isinstance(a, str) and len(a) < 20 for a in arch):
        raise bad("malformed result: cell.arch is not a list of arches")
    for k, v in cell.items():
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise bad(f"malformed result: cell.{k} is {len(v)} characters")
    if not isinstance(d.get("machine"), dict | None):
        raise bad("malformed result: 'machine' is not an object")
    if not isinstance(d.get("written"), str | None):
        raise bad("malformed result: 'written' is not a string")
    le = d.get("last_error")
    if le is not None and not (
        isinstance(le, dict)
        and all(isinstance(le.get(k), str) for k in ("stage", "cause", "fix", "written"))
        and len(le["cause"]) <= MAX_TEXT
    ):
        raise bad("malformed result: 'last_error' is not stage/cause/fix/written")
    stages = d.get("stages")
    if not isinstance(stages, list):
        raise bad("malformed result: 'stages' is not a list")
    for n, s in enumerate(stages):
        where = f"stages[{n}]"
        if not isinstance(s, dict):
            raise bad(f"malformed result: {where} is not an object")
        name, status = s.get("stage"), s.get("status")
        if not isinstance(name, str) or not _STAGE.fullmatch(name):
            raise bad(f"malformed result: {where}.stage {_short_repr(name)} is not a stage name")
        if status not in STATUSES:
            raise bad(
                f"malformed result: {where} ({name}) has status {_short_repr(status)}, "
                f"not one of {', '.join(STATUSES)}"
            )
        secs = s.get("seconds")
        if isinstance(secs, bool) or not isinstance(secs, int | float) or not secs >= 0:
            raise bad(f"malformed result: {where}.seconds {_short_repr(secs)} is not a duration")
        if not isinstance(s.get("summary"), str) or len(s["summary"]) > MAX_TEXT:
            raise bad(f"malformed result: {where}.summary is not a string of sane size")
        if not isinstance(s.get("details", {}), dict):
            raise bad(f"malformed result: {where}.details is not an object")
        if not isinstance(s.get("log"), str | None):
            raise bad(f"malformed result: {where}.log is not a string")
        findings = s.get("findings", [])
        if not isinstance(findings, list):
            raise bad(f"malformed result: {where}.findings is not a list")
        for f in findings:
            ok = isinstance(f, dict) and all(
                isinstance(f.get(k), str) and len(f[k]) <= MAX_TEXT
                for k in ("rule", "level", "message")
            )
            if not ok or not isinstance(f.get("evidence", []), list):
                raise bad(f"malformed result: a finding of {where} is not rule/level/message")
            try:
                Finding(**{**f, "evidence": tuple(f.get("evidence", ()))})
            except TypeError as exc:
                raise bad(f"malformed result: a finding of {where}: {exc}") from None
        s["status"] = Status(status)  # the member: typed as the envelope says
    return cast(Envelope, d)


def read(path: Path) -> Envelope:
    """A result file, checked (``check``); a ResultFormatError names the file and says what
    is wrong with it (also for a file that is empty, not UTF-8 or not JSON)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ResultFormatError(f"{size} bytes, more than a result file ever holds")
        raw = path.read_bytes()
        if not raw.strip():
            raise ResultFormatError("empty file")
        text = raw.decode("utf-8")
        d = check(json.loads(text))
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ResultFormatError(f"{path.name}: {reason}", reason) from None
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON (line {exc.lineno}: {exc.msg})"
        raise ResultFormatError(f"{path.name}: {reason}", reason) from None
    except RecursionError:
        reason = "not valid JSON (nested too deep)"
        raise ResultFormatError(f"{path.name}: {reason}", reason) from None
    except ResultFormatError as exc:
        raise ResultFormatError(f"{path.name}: {exc.reason}", exc.reason) from None
    return d
