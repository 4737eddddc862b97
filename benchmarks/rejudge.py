"""Re-judge a device run from what it recorded, with the judgement code of this checkout.

A run on the GPU machine is paid for in scarce device time; when it stopped on a rule of
the tool's own that was wrong (issue 12's second device run: the audit's wgmma rule judged
each FP8 GEMM object alone and failed the entry units, which hold no MMA in any build),
the measurements it recorded are still good. This applies the current rules to them:

- the audit: its ``sm90a`` findings are recomputed from the recorded per-object SASS
  arches and MMA census (``details.fp8_gemm_objects``); every other finding is kept as
  recorded (they need the files, which stayed on that machine);
- the gpu stage: ``gpu.judge`` over the worker's JSON (``stages/gpu_worker.py`` run there
  on the same build's extensions), appended when the run stopped before it.

Nothing is measured here. Each re-judged stage says so in its summary and details
(``rejudged``), so a reader never takes it for the run's own word.

  python benchmarks/rejudge.py RESULT.json --gpu-json WORKER.json --out OUT.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from vllm_matrix.infra import results
from vllm_matrix.infra.results import Finding, StageResult
from vllm_matrix.pipeline import plan  # noqa: F401  (registers the stage order verdicts read)
from vllm_matrix.stages import audit, gpu

NOTE = "re-judged from this run's recorded data with the current rules (benchmarks/rejudge.py)"


def rejudge_audit(s: StageResult) -> StageResult:
    objs = s.details.get("fp8_gemm_objects", [])
    archs = tuple(s.details.get("targets", ()))
    kept = tuple(f for f in s.findings if f.rule != "sm90a")
    new: list[Finding] = []
    for o in objs:
        new += audit.sm90a_findings(o["object"], archs, tuple(o["sass"]))
    new += audit.wgmma_findings((o["object"], o["mma"]) for o in objs)
    findings = kept + tuple(new)
    was = [f.message for f in s.findings if f.rule == "sm90a"]
    details = s.details | {"rejudged": {"note": NOTE, "recorded_sm90a_findings": was}}
    return replace(
        s,
        status=results.status_of(findings),
        summary=f"{s.summary} [{NOTE}]",
        findings=findings,
        details=details,
    )


def rejudge(doc: dict[str, Any], worker: dict[str, Any] | None) -> dict[str, Any]:
    stages = [StageResult.from_json(s) for s in doc["stages"]]
    stages = [rejudge_audit(s) if s.stage == "audit" else s for s in stages]
    build = next((s for s in stages if s.stage == "build"), None)
    targets = tuple((build.details.get("partial") or {}).get("targets", ())) if build else ()
    if worker is not None and not any(s.stage == "gpu" for s in stages):
        g = gpu.judge(worker, targets)
        note = f"{NOTE}; the worker ran by hand on this run's extensions"
        stages.append(
            replace(g, summary=f"{g.summary} [{note}]", details=g.details | {"rejudged": note})
        )
    out = dict(doc)
    out["stages"] = [s.to_json() for s in stages]
    out["verdict"] = results.verdict_json(stages)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("result", type=Path)
    p.add_argument("--gpu-json", type=Path, help="the gpu worker's JSON from the same run")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    doc = results.read(a.result)
    worker = json.loads(a.gpu_json.read_text()) if a.gpu_json else None
    new = rejudge(doc, worker)
    a.out.write_text(json.dumps(new, indent=1) + "\n")
    print(f"{a.out.name}: {new['verdict']['verdict']} at {new['verdict']['depth']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
