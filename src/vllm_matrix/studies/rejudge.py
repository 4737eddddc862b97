"""Re-judge a device run from what it recorded, with the judgement code of this checkout.

A run on the GPU machine is paid for in scarce device time; when it stopped on a rule of
the tool's own that was wrong (issue 12's second device run: the audit's wgmma rule judged
each FP8 GEMM object alone and failed the entry units, which hold no MMA in any build),
the measurements it recorded are still good. This applies the current rules to them:

- the audit: its ``sm90a`` findings are recomputed from the recorded per-object SASS
  arches and MMA census (``details.fp8_gemm_objects``); every other finding is kept as
  recorded (they need the files, which stayed on that machine);
- the gpu stage: ``gpu.judge`` over the worker's JSON (``workers/gpu_worker.py`` run there
  on the same build's extensions), appended when the run stopped before it.

Nothing is measured here. Each re-judged stage says so in its summary and details
(``rejudged``), so a reader never takes it for the run's own word.
Script: benchmarks/studies/rejudge.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from vllm_matrix.infra import results
from vllm_matrix.infra.results import Finding, StageResult
from vllm_matrix.pipeline import plan  # noqa: F401  (registers the stage order verdicts read)
from vllm_matrix.stages import audit, gpu

NOTE = (
    "re-judged from this run's recorded data with the current rules (benchmarks/studies/rejudge.py)"
)


def rejudge_audit(recorded: StageResult) -> StageResult:
    audited = cast(results.AuditDetails, recorded.details)
    objects = audited.get("fp8_gemm_objects", [])
    archs = tuple(audited.get("targets", ()))
    kept = tuple(finding for finding in recorded.findings if finding.rule != "sm90a")
    fresh: list[Finding] = []
    for obj in objects:
        fresh += audit.sm90a_findings(obj["object"], archs, tuple(obj["sass"]))
    fresh += audit.wgmma_findings((obj["object"], obj["mma"]) for obj in objects)
    findings = kept + tuple(fresh)
    was = [finding.message for finding in recorded.findings if finding.rule == "sm90a"]
    details = recorded.details | {"rejudged": {"note": NOTE, "recorded_sm90a_findings": was}}
    return replace(
        recorded,
        status=results.status_of(findings),
        summary=f"{recorded.summary} [{NOTE}]",
        findings=findings,
        details=details,
    )


def rejudge(doc: Mapping[str, Any], worker: dict[str, Any] | None) -> dict[str, Any]:
    stages = [StageResult.from_json(stage) for stage in doc["stages"]]
    stages = [rejudge_audit(stage) if stage.stage == "audit" else stage for stage in stages]
    build = next((stage for stage in stages if stage.stage == "build"), None)
    built = cast(results.BuildDetails, build.details) if build else results.BuildDetails()
    targets = tuple(built.get("partial", results.PartialBuildDoc()).get("targets", ()))
    if worker is not None and not any(stage.stage == "gpu" for stage in stages):
        judged = gpu.judge(worker, targets)
        note = f"{NOTE}; the worker ran by hand on this run's extensions"
        stages.append(
            replace(
                judged,
                summary=f"{judged.summary} [{note}]",
                details=judged.details | {"rejudged": note},
            )
        )
    out = dict(doc)
    out["stages"] = [stage.to_json() for stage in stages]
    out["verdict"] = results.verdict_json(stages)
    return out
