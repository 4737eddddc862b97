"""The target every answering command takes (``--arch``, ``--gpu``, ``--driver-cuda``,
``--env PATH``, declared in options.py), and a cell's full preflight answer as text.

The logic lives in pipeline/target.py (what the target is) and pipeline/advice.py (what to
change); this module only turns arguments into them and results into lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

from packaging.version import Version

from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import Finding, PreflightDetails, StageResult
from vllm_matrix.knowledge import toolchains
from vllm_matrix.pipeline import advice
from vllm_matrix.pipeline import target as target_mod


def resolve(args: argparse.Namespace, required: bool = True) -> target_mod.Target:
    env = getattr(args, "env", None)
    return target_mod.resolve(
        getattr(args, "arch", None),
        getattr(args, "gpu", None),
        getattr(args, "driver_cuda", None),
        env if env and env != "current" else None,
        required=required,
    )


def preflight_lines(stages: list[StageResult], driver_cuda: str | None = None) -> list[str]:
    """Every rule of a cell's preflight, failures first, then what limits the depth here;
    the advice's options less those the target's driver (``driver_cuda``) cannot run."""
    pre = next((s for s in stages if s.stage == "preflight"), None)
    if pre is None:
        return []
    order = {"fail": 0, "warn": 1, "info": 2}
    found: list[Finding] = sorted(
        (f for f in pre.findings if f.rule != "toolkit-obtainable"),
        key=lambda f: order.get(f.level, 3),
    )
    mark = {"fail": "FAIL", "warn": "warn", "info": "ok"}
    out = [f"preflight ({len(found)} rules):"]
    for f in found:
        ev = ", ".join(e if len(e) <= 60 else e[:59] + "…" for e in f.evidence[:2] if e)
        ev = f" [{ev}]" if ev else ""
        out.append(f"  {mark.get(f.level, f.level):4} {f.rule:18} {f.message}{ev}")
    stored = cast(PreflightDetails, pre.details)
    fp8 = stored.get("modelopt_fp8")
    if fp8:  # quantization="modelopt" with an FP8 checkpoint, for the cell's arch
        out.append(f"ModelOpt FP8: {fp8}")
        for ans in stored.get("modelopt_fp8_gemm") or []:
            rests = [e for e in ans.get("evidence", []) if "→" in e or e.startswith("audited")]
            out += [f"  {e}" for e in rests]  # the dispatch (file:line) and the audit, if any
    here = [f for f in pre.findings if f.rule == "toolkit-obtainable"]
    out += [f"{f.message} (to compile: {f.fix})" for f in here]
    adv = stored.get("advice")
    opts = (adv.get("options") if adv else None) or []
    if driver_cuda:
        runs = [o for o in opts if Version(o["cuda"]) <= Version(driver_cuda)]
        if len(runs) < len(opts):
            out.append(
                f"({len(opts) - len(runs)} option(s) need a driver newer than CUDA "
                f"{driver_cuda}: left out)"
            )
        opts = runs
    if opts:
        out.append("smallest change first (vLLM × torch build × CUDA toolkit; evidence):")
        out += [f"  {n}. {o['text']}" for n, o in enumerate(opts, 1)]
    return out


def elsewhere_lines(cell: Cell, root: Path) -> list[str]:
    """The same cell compiled on another machine (reports/device/, results/), named."""
    know = toolchains.load()
    done = advice.compiled_results(advice.result_dirs(root), know)
    key = advice.compiled_key(cell.vllm, cell.torch, cell.cuda, cell.arch, know)
    c = done.get(key)
    return [f"compiled elsewhere: {c.text()}"] if c else []


def driver_lines(cell: Cell, driver_cuda: str | None) -> list[str]:
    """What the target's driver cannot run of this cell (--driver-cuda)."""
    if not driver_cuda:
        return []
    tf = toolchains.load().torch_facts(cell.torch)
    out = []
    for msg, fix in gpuinfo.check(
        gpuinfo.GpuReport((), driver_cuda, "--driver-cuda"),
        cell.cuda,
        tf.label if tf else cell.torch,
        tf.cuda if tf else None,
    ):
        out.append(f"the target's driver: {msg} (fix: {fix})")
    return out or [f"the target's driver (CUDA ≤ {driver_cuda}) runs this torch and toolkit"]


def advice_note(cell: Cell, root: Path) -> str:
    """One line for a cell predicted to fail (pixi-snippet says it before the snippet):
    the one advice, as every other command gives it; "" when nothing is predicted to fail."""
    have = advice.Have(cell.torch, cell.cuda, cell.arch, cell.python, cell.vllm)
    a = advice.adviser_for(root).advise(have)
    return "" if a.ok_as_is else f"{cell.id} is predicted to fail; instead: {a.text()}"


__all__ = [
    "advice_note",
    "driver_lines",
    "elsewhere_lines",
    "preflight_lines",
    "resolve",
]
