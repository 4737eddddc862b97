"""What an earlier run of a cell still gives a rerun: its passing probe (same inputs) and
its deeper stages (a shallower rerun that came out the same)."""

from __future__ import annotations

from typing import Any

from vllm_matrix.infra import portable, results
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import PASS, StageResult, Verdict
from vllm_matrix.pipeline.context import CellContext, Workspace, need


def previous(ws: Workspace, cell: Cell) -> results.Envelope | None:
    """The cell's result file as it is (None: none yet, or unreadable)."""
    try:
        return results.read(ws.results / f"{cell.id}.json")
    except (OSError, ValueError, KeyError):
        return None


def probe_inputs(ctx: CellContext) -> dict[str, Any]:
    """What the probe's outcome depends on, beyond the cell (whose id names the result
    file): the source, the toolkit, the env's torch and Python, the patches applied. Not the
    env's variant: the headers a probe reads are the same in the "headers" env and in the
    build's "full" env. Stored in the probe's details as ``inputs``."""
    tk, tv = need(ctx.toolkit), need(ctx.env)
    return {
        "source": need(ctx.tree).origin,
        "toolkit": {"nvcc": tk.full_version, "provider": tk.provider, "root": str(tk.root)},
        "torch": tv.torch_version,
        "python": tv.python,
        "patches": {a.patch.name: a.status for a in need(ctx.applied)},
    }


def probe_to_reuse(ctx: CellContext, inputs: dict[str, Any]) -> StageResult | None:
    """The probe stage's result without probing, or None (probe). A build reruns after a
    stop; the probe that passed for the same inputs (source, toolkit, torch, patches)
    minutes or hours ago still holds. A run that stops at the probe probes again."""
    if not ctx.runs("build"):
        return None
    return passed_probe(ctx, inputs)


def passed_probe(ctx: CellContext, inputs: dict[str, Any]) -> StageResult | None:
    """The earlier run's passing probe of this cell, if it ran on the same ``inputs``.

    A probe written before its details held ``inputs`` is not reused: it runs again once.
    """
    d = ctx.previous
    if d is None:
        return None
    prev = [StageResult.from_json(s) for s in d["stages"]]
    old = next((s for s in prev if s.stage == "probe"), None)
    if old is None or old.status != PASS:
        return None
    probed = results.probe_details(old.details)
    if "inputs" not in probed:
        return None
    # Compared as written (results hold portable paths: $VLLM_MATRIX_CACHE/...).
    roots = portable.Roots.here(ctx.ws.root)
    if portable.doc(probed["inputs"], roots) != portable.doc(inputs, roots):
        return None
    since = probed.get("reused_from", d["written"])
    return StageResult(
        "probe",
        PASS,
        old.seconds,
        f"{old.summary.split(' (reused: ')[0]} (reused: passed on the same inputs, {since})",
        old.findings,
        old.details | {"reused_from": since},
        old.log,
    )


def keep_deeper(d: results.Envelope | None, stages: list[StageResult]) -> list[StageResult]:
    """A shallower rerun must not erase what a deeper run found: when every stage of this
    run came out as before, the earlier run's deeper stages (``d``: the result as it was
    before this run wrote its first placeholder) are kept."""
    if d is None:
        return stages
    prev = [StageResult.from_json(s) for s in d["stages"]]
    same = [(s.stage, s.status) for s in stages] == [
        (s.stage, s.status) for s in prev[: len(stages)]
    ]
    return stages + prev[len(stages) :] if same and len(prev) > len(stages) else stages


def kept_over_error(
    d: results.Envelope | None, stages: list[StageResult]
) -> list[StageResult] | None:
    """The earlier run's stages when this run ended in ERROR (the tool or the machine
    failed: nothing learned about vLLM) and the earlier run holds evidence as deep as the
    stage this one stopped at: a full disk at preflight must not erase a probe, a build or a
    GPU run. None when this run's stages are to be written as they are."""
    if d is None or results.verdict_of(stages).verdict != Verdict.ERROR:
        return None
    prev = [StageResult.from_json(s) for s in d["stages"]]
    old = results.verdict_of(prev)
    if old.verdict in (Verdict.ERROR, Verdict.UNKNOWN):
        return None
    rank = {name: n for n, name in enumerate(results.STAGE_ORDER)}
    stopped = results.verdict_of(stages).depth
    deep = rank.get(results.depth_stage(old.depth), -1) >= rank.get(stopped, len(rank))
    return prev if deep else None


__all__ = ["keep_deeper", "kept_over_error", "passed_probe", "previous", "probe_inputs"]
