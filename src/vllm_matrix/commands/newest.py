"""`newest`: the newest vLLM release one can build with the torch one has.

The walk runs preflight over every release from the newest down (each release's own
source: its CMakeLists.txt gates and pins, the API scan of csrc/) and stops at the first
one no rule predicts to fail. At depth probe the boundary is then checked by compiling:
the answer is probed (it should compile) and so is the next newer release (preflight
says it fails; the probe, run past the prediction, checks that).

What the answer rests on is part of it: a compile is not a run. A release's published
wheel pins its torch (Requires-Dist), and its Python side is written against that torch;
building it against an older torch says nothing about whether it then runs.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.version import Version

from vllm_matrix.commands import target as target_opts
from vllm_matrix.commands.common import say
from vllm_matrix.infra import index, results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell, split_torch
from vllm_matrix.infra.errors import ConfigError, MatrixError
from vllm_matrix.infra.results import ERROR, PREDICTED_FAIL, Finding, Status
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import advice as advice_mod
from vllm_matrix.pipeline import grid, plan, runner
from vllm_matrix.pipeline.context import Workspace
from vllm_matrix.sources import releases as releases_mod
from vllm_matrix.stages import preflight
from vllm_matrix.stages.preflight import modelopt

NEWEST_DEPTHS = ("preflight", "probe")  # the depths newest walks to


@dataclass(frozen=True)
class Step:
    """One release's preflight on the way down."""

    vllm: str
    status: Status  # PASS / WARN / SKIP / PREDICTED_FAIL, or ERROR (the source unreadable)
    fails: tuple[str, ...] = ()  # the failing rules' messages
    evidence: tuple[str, ...] = ()
    note: str = ""  # warnings/skips, or why the release could not be checked

    def to_json(self) -> dict[str, Any]:
        return {
            "vllm": self.vllm,
            "preflight": self.status,
            "fails": list(self.fails),
            "evidence": list(self.evidence),
            "note": self.note,
        }


@dataclass(frozen=True)
class Answer:
    torch: str
    cuda: str
    provider: str
    arch: tuple[str, ...]
    python: str
    newest: str | None
    next: str | None
    depth: str
    steps: tuple[Step, ...]
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rests_on: tuple[str, ...] = ()
    wheel_torch: str | None = None  # the newest release's wheel's torch requirement
    pinned_to_this_torch: str | None = None  # the newest release whose own pin is this torch
    # no release serves it: the smallest toolchain change (pipeline/advice.py)
    advice: advice_mod.Advice | None = None
    target: str = ""  # how the arch (and env) was had

    def to_json(self) -> dict[str, Any]:
        return {
            "newest": self.newest,
            "next": self.next,
            "depth": self.depth,
            "query": {
                "torch": self.torch,
                "cuda": self.cuda,
                "provider": self.provider,
                "arch": list(self.arch),
                "python": self.python,
            },
            "advice": self.advice.to_json() if self.advice else None,
            "target": self.target,
            "evidence": {
                "walk": [s.to_json() for s in self.steps],
                "probes": self.probes,
                "wheel_torch": self.wheel_torch,
                "newest_pinned_to_this_torch": self.pinned_to_this_torch,
                "rests_on": list(self.rests_on),
            },
        }


def releases(pinned: dict[str, str] | None = None) -> list[str]:
    """Final releases, newest first: ``pins.releases()`` (the index's list, see
    knowledge/pins.py), or the releases of ``pinned`` where a caller passes its own."""
    vs = pins.releases() if pinned is None else list(pinned)
    return sorted((v for v in vs if not Version(v).is_prerelease), key=Version, reverse=True)


def make_cell(
    vllm: str, torch: str, cuda: str, provider: str, py: str, arch: tuple[str, ...]
) -> Cell:
    return Cell(vllm, torch, cuda, provider, py, arch, note="newest: a release on the walk")


def _step(cell: Cell, adv: advice_mod.Adviser) -> Step:
    """One release's preflight, on the release facts cache (a warm walk reads no tree)."""
    status, found = adv.findings(cell.vllm, cell.torch, cell.cuda, cell.arch, cell.python)
    if status == ERROR:
        return Step(cell.vllm, ERROR, note=found[0].message if found else "")
    bad = [x for x in found if x.level == "fail"]
    soft = [x for x in found if x.level in ("warn", "skip")]
    return Step(
        cell.vllm,
        status,
        tuple(x.message for x in bad),
        tuple(e for x in bad for e in x.evidence),
        "; ".join(x.message for x in soft),
    )


def walk(
    torch: str,
    cuda: str | None = None,
    arch: tuple[str, ...] = ("9.0",),
    python: str = "3.12",
    provider: str | None = None,
    *,
    know: toolchains.Knowledge | None = None,
    host: preflight.Host | None = None,
    pinned: dict[str, str] | None = None,
    step: Callable[[Cell], Step] | None = None,
    echo: Callable[[str], None] | None = None,
    adviser: advice_mod.Adviser | None = None,
    driver_cuda: str | None = None,
) -> Answer:
    """Preflight each release newest-down; stop at the first one not predicted to fail."""
    know = know or toolchains.load()
    given, pinned = pinned, pinned if pinned is not None else releases_mod.pinned()
    try:
        version, _ = split_torch(torch)
    except ValueError as exc:
        raise ConfigError(
            f"--torch {torch!r}: {exc}", fix="e.g. --torch 2.6.0 or 2.7.1+cu128"
        ) from None
    tf = know.torch_facts(torch)
    if cuda is None:
        if tf is None:
            raise ConfigError(
                f"no facts for torch {torch}, so no default CUDA",
                fix="pass --cuda (e.g. --cuda 12.4)",
            )
        cuda = tf.cuda
    provider = provider or know.provider_for(cuda)
    adv = adviser or advice_mod.Adviser(know=know, pinned=pinned)
    run = step or (lambda c: _step(c, adv))
    steps: list[Step] = []
    newest = None
    for v in releases(given):
        s = run(make_cell(v, torch, cuda, provider, python, arch))
        steps.append(s)
        if echo:
            echo(f"{v}: {s.status}" + (f" ({s.fails[0][:100]})" if s.fails else ""))
        if s.status not in (PREDICTED_FAIL, ERROR):
            newest = v
            break
    nxt = (
        next((s.vllm for s in reversed(steps[:-1]) if s.status == PREDICTED_FAIL), None)
        if newest
        else None
    )
    same = [v for v, p in pinned.items() if Version(p) == Version(version)]
    adv_answer = None
    if newest is None and step is None:  # the cheapest way out, from the one advice
        have = advice_mod.Have(torch, cuda, arch, python, driver_cuda=driver_cuda)
        adv_answer = adv.advise(have)
    return Answer(
        torch,
        cuda,
        provider,
        arch,
        python,
        newest,
        nxt,
        "preflight",
        tuple(steps),
        pinned_to_this_torch=max(same, key=Version) if same else None,
        advice=adv_answer,
    )


def from_env(
    tgt: Any, torch: str | None, cuda: str | None, python: str | None
) -> tuple[str, str | None, str]:
    """--torch/--cuda/--python, each defaulting to what ``--env``'s prefix holds."""
    env = tgt.env
    torch = torch or (env.torch if env else None)
    if not torch:
        raise ConfigError(
            "which torch? pass --torch (e.g. --torch 2.6.0) or --env PREFIX (read from it)",
            fix="--torch 2.6.0 or --env $CONDA_PREFIX",
        )
    cuda = cuda or (env.nvcc if env else None)
    return torch, cuda, python or (env.python if env and env.python else "3.12")


def wheel_torch_requirement(vllm: str) -> str | None:
    """The torch requirement in the release's published linux wheel (Requires-Dist)."""
    want = Version(vllm)
    wheels = [
        f
        for f in index.project_files("vllm")
        if f.kind == "wheel" and f.version == want and "x86_64" in f.filename
    ] or [f for f in index.project_files("vllm") if f.kind == "wheel" and f.version == want]
    if not wheels:
        return None
    for req in index.wheel_requires(wheels[0]):
        name = req.split(";")[0].strip()
        if name.lower().startswith("torch") and not name.lower().startswith(
            ("torchvision", "torchaudio")
        ):
            return name.replace(" ", "")
    return None


def probe_boundary(
    ans: Answer,
    run_cell: Callable[[Cell, bool], list[results.StageResult]],
) -> Answer:
    """Depth probe: compile the answer (should pass) and the next newer release (run past
    its predicted failure, to check the prediction)."""
    probes: dict[str, dict[str, Any]] = {}
    for v, force in ((ans.newest, False), (ans.next, True)):
        if v is None:
            continue
        cell = make_cell(v, ans.torch, ans.cuda, ans.provider, ans.python, ans.arch)
        stages = run_cell(cell, force)
        verdict = results.verdict_of(stages)
        probes[v] = {
            "cell": cell.id,
            "verdict": verdict.verdict,
            "label": verdict.label,  # "PASS (7 of 14 units; 7 need CUTLASS v4.0.0)"
            "depth": verdict.depth,
            "cause": verdict.cause,
            "evidence": list(verdict.evidence),
            # what the probe covered ("7 units, front-end, all passed; 7 not probed ...")
            "probe": next((s.summary for s in stages if s.stage == "probe"), ""),
        }
    depth = "probe" if any(p["depth"] == "probe" for p in probes.values()) else ans.depth
    return replace(ans, depth=depth, probes=probes)


def explain(ans: Answer, wheel_torch: str | None) -> Answer:
    """Fill in what the answer rests on (and the newest release's wheel pin)."""
    out: list[str] = []
    tv = split_torch(ans.torch)[0]
    if ans.newest is None:
        out.append(
            f"every release from the newest down is predicted to fail with torch {ans.torch}"
        )
    else:
        out.append(
            f"preflight: vLLM {ans.newest} is the newest release no rule predicts to fail "
            f"(its own CMakeLists.txt arch lists and nvcc gates, the API scan of its csrc/ "
            f"against torch {tv}, the toolchain facts); "
            + (
                f"{ans.next} is predicted to fail: {_first_fail(ans, ans.next)}"
                if ans.next
                else "it is the newest release"
            )
        )
        probe = ans.probes.get(ans.newest)
        if probe and probe["depth"] != "probe":
            out.append(
                f"not compiled here: vLLM {ans.newest} → {probe['verdict']} at "
                f"{probe['depth']}: {probe['cause']} (the answer stays a preflight prediction)"
            )
        elif probe:
            covered = f" ({probe['probe']})" if probe.get("probe") else ""
            out.append(
                f"probe: vLLM {ans.newest} → {probe.get('label', probe['verdict'])} at "
                f"{probe['depth']}{covered}"
                + (
                    f"; {ans.next} → {ans.probes[ans.next]['verdict']} "
                    f"at {ans.probes[ans.next]['depth']}"
                    if ans.next in ans.probes
                    else ""
                )
                + " (the probe compiles the risky translation units, not the whole wheel)"
            )
        else:
            out.append("not compiled: a preflight answer is a prediction (use --depth probe)")
        out.append("a compile is not a run: nothing here imports or runs vLLM on a GPU")
        if wheel_torch:
            same = _pin_matches(wheel_torch, tv)
            out.append(
                f"vLLM {ans.newest}'s published wheel requires {wheel_torch}: "
                + (
                    f"torch {tv} is its own pin, the combination upstream ships"
                    if same
                    else f"its Python side is written against that torch, not {tv}; built "
                    f"against torch {tv} it may still fail at import or run time "
                    "(not checked here)"
                )
            )
        else:
            out.append(f"vLLM {ans.newest}'s wheel metadata could not be read (no torch pin known)")
        if ans.pinned_to_this_torch:
            p = ans.pinned_to_this_torch
            rel = (
                "the same release"
                if Version(p) == Version(ans.newest)
                else (
                    "newer than the answer"
                    if Version(p) > Version(ans.newest)
                    else "older than the answer"
                )
            )
            out.append(f"the newest release pinned to torch {tv} is vLLM {p} ({rel})")
    return replace(ans, rests_on=tuple(out), wheel_torch=wheel_torch)


def _pin_matches(req: str, torch_version: str) -> bool:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Version(torch_version) in Requirement(req).specifier
    except (InvalidRequirement, ValueError):
        return False


def _first_fail(ans: Answer, v: str) -> str:
    s = next((s for s in ans.steps if s.vllm == v), None)
    return s.fails[0] if s and s.fails else "?"


MAX_LINES = 20


def render(ans: Answer, verbose: bool = False) -> str:
    """At most MAX_LINES lines; ``verbose`` adds every release of the walk."""
    archs = ", ".join(Arch.parse(a).sm for a in ans.arch)
    lines = [
        f"torch {ans.torch} × CUDA {ans.cuda} ({ans.provider}) × {archs} × Python {ans.python}",
    ]
    if ans.target:
        lines.append(ans.target)
    lines.append(
        f"newest: {ans.newest or 'none'}   next newer: {ans.next or '-'}   depth: {ans.depth}"
    )
    if ans.newest is None and ans.steps:
        top = ans.steps[0]
        lines.append(f"  why, for the newest ({top.vllm}):")
        whys = top.fails or (top.note,)
        lines += [f"    - {w if len(w) <= 130 else w[:129] + '…'}" for w in whys[:3]]
    if ans.advice is not None:
        lines.append("smallest change first (vLLM × torch build × CUDA toolkit; evidence):")
        lines += [f"  {n}. {o.text()}" for n, o in enumerate(ans.advice.options, 1)]
        if not ans.advice.options:
            lines.append(f"  {ans.advice.text()}")
    lines += [f"  - {r}" for r in ans.rests_on]
    fails = [s for s in ans.steps if s.status == PREDICTED_FAIL]
    walked = f"walk: {len(ans.steps)} releases preflighted"
    if fails:
        walked += f", {fails[0].vllm} … {fails[-1].vllm} predicted to fail"
    if not verbose:
        lines.append(walked + " (--verbose lists each)")
        return "\n".join(lines[: MAX_LINES - 1] + lines[-1:] if len(lines) > MAX_LINES else lines)
    lines.append(walked + ":")
    for s in ans.steps:
        why = s.fails[0] if s.fails else s.note
        lines.append(f"  {s.vllm:12} {s.status:15} {why[:140]}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`newest`: the newest release that builds with the torch given, for the target."""
    tgt = target_opts.resolve(args)
    torch, cuda, python = from_env(tgt, args.torch, args.cuda, args.python)
    if torch:
        grid.check_version(torch, "torch", "--torch: ")
    echo = say if args.verbose else None
    ans = walk(
        torch, cuda, tgt.archs, python, args.provider, echo=echo, driver_cuda=tgt.driver_cuda
    )
    ans = replace(ans, target=tgt.line())
    if args.depth == "probe" and ans.newest:
        ws = Workspace(Path.cwd())

        def run_cell(cell: Cell, force: bool) -> list[results.StageResult]:
            say(f"probing {cell.id}" + (" (past its predicted failure)" if force else ""))
            return runner.run_cell(cell, ws, depth="probe", force=force, echo=say)

        ans = probe_boundary(ans, run_cell)
    wheel_torch = None
    if ans.newest:
        try:
            wheel_torch = wheel_torch_requirement(ans.newest)
        except MatrixError as exc:
            say(f"the wheel metadata of vLLM {ans.newest} could not be read: {exc.message}")
    ans = explain(ans, wheel_torch)
    if ans.newest:  # the answer compiled on another machine counts, with that machine named
        cell = make_cell(ans.newest, ans.torch, ans.cuda, ans.provider, ans.python, ans.arch)
        more = target_opts.elsewhere_lines(cell, Path.cwd())
        ans = replace(ans, rests_on=(*ans.rests_on, *more))
    print(json.dumps(ans.to_json(), indent=1) if args.json else render(ans, args.verbose))
    return 0 if ans.newest else 1


__all__ = ["NEWEST_DEPTHS", "Answer", "Step", "explain", "probe_boundary", "render", "run", "walk"]


# ---------------------------------------------------------------- Blackwell answers


@dataclass(frozen=True)
class Cheapest:
    """The cheapest toolchain that serves ``arch`` for one release, at preflight."""

    vllm: str
    arch: str
    cell: Cell | None  # None: nothing known serves it
    status: Status  # the preflight status of that cell
    off_pin: bool  # the torch differs from the release's own pin
    why: tuple[str, ...]  # the warnings/skips it carries, or why nothing serves it
    evidence: tuple[str, ...]
    modelopt_fp8: str
    modelopt_evidence: str
    torch_basis: str  # "measured" / "documented" (the torch build's facts)
    kernels: tuple[str, ...] = ()  # the arch-gated kernel families and whether they build

    def to_json(self) -> dict[str, Any]:
        c = self.cell
        return {
            "vllm": self.vllm,
            "arch": self.arch,
            "cell": c.id if c else None,
            "torch": c.torch if c else None,
            "cuda": c.cuda if c else None,
            "provider": c.provider if c else None,
            "preflight": self.status,
            "off_pin": self.off_pin,
            "why": list(self.why),
            "evidence": list(self.evidence),
            "modelopt_fp8": self.modelopt_fp8,
            "modelopt_evidence": self.modelopt_evidence,
            "torch_facts": self.torch_basis,
            "kernels": list(self.kernels),
        }


def cheapest(
    vllm: str,
    arch: str = "12.0",
    python: str = "3.12",
    *,
    know: toolchains.Knowledge | None = None,
    host: preflight.Host | None = None,
    pinned: dict[str, str] | None = None,
    adviser: advice_mod.Adviser | None = None,
    ws: Workspace | None = None,
) -> Cheapest:
    """The release on the smallest toolchain change from its own pin that preflight lets
    through: the one advice's option that keeps this vLLM (pipeline/advice.py), so the
    Blackwell table and every other command agree. ``host`` is unused: the host
    compiler is this machine's matter, not the target's. ``ws``: where audits of the
    release's FP8 GEMM objects are looked for (default: the current directory's)."""
    know = know or toolchains.load()
    pinned = pinned if pinned is not None else releases_mod.pinned()
    adv = adviser or advice_mod.Adviser(know=know, pinned=pinned)
    pin = pinned.get(vllm)
    ptf = know.torch_facts(pin) if pin else None
    have = advice_mod.Have(pin or "", ptf.cuda if ptf else "0.0", (arch,), python, vllm)
    chosen: tuple[str, str] | None = None
    tried = ("no torch pin known for this release",)
    if pin:
        a = adv.advise(have)
        if a.ok_as_is:
            chosen = (pin, have.cuda)
        else:
            keep = [o for o in a.options if not any(c.startswith("vLLM") for c in o.changes)]
            chosen = (keep[0].torch, keep[0].cuda) if keep else None
            tried = (a.text(),)
    if chosen is None:
        return Cheapest(vllm, arch, None, PREDICTED_FAIL, False, tried, (), "", "", "unknown")
    label, nvcc = chosen
    tf = know.torch_facts(label)
    base = know.torch_facts(tf.version) if tf else None
    spec = tf.version if tf and base is not None and base.label == tf.label else label
    status, found_t = adv.findings(vllm, spec, nvcc, (arch,), python)
    found = list(found_t)
    cell = make_cell(vllm, spec, nvcc, know.provider_for(nvcc), python, (arch,))
    rel = adv.release(vllm)
    # the preflight stage's ModelOpt FP8 answer (per arch, from the dispatch code), not a
    # second one: the Blackwell table said "yes (sm89+)" for 0.8.5, compat.md "no"
    dirs = plan.audit_dirs(ws or Workspace(Path.cwd()))
    fp8 = modelopt.fp8_column(cell, rel.facts, Path(rel.tree), dirs, know=know)
    mo, mo_ev = fp8.column, fp8.evidence
    off = bool(pin) and Version(str(pin)) != Version(cell.torch_version)
    return Cheapest(
        vllm,
        arch,
        cell,
        status,
        off,
        tuple(x.message for x in found if x.level in ("warn", "skip")),
        tuple(e for x in found if x.level in ("warn", "skip", "fail") for e in x.evidence),
        mo,
        mo_ev,
        tf.basis if tf else "unknown",
        _kernels(found),
    )


def _kernels(found: list[Finding]) -> tuple[str, ...]:
    """'SCALED_MM_ARCHS built with nvcc 12.8' once per kernel family (gate variable)."""
    out: dict[str, str] = {}
    for x in found:
        if x.rule != "kernel-gate":
            continue
        m = re.search(r"compiles (\w+) .*: ((?:NOT )?built with nvcc \S+)", x.message)
        if m:
            out.setdefault(m.group(1), f"{m.group(1)} {m.group(2)} ({x.evidence[0]})")
    return tuple(out.values())


def newest_serving(
    arch: str = "12.0",
    *,
    know: toolchains.Knowledge | None = None,
    pinned: dict[str, str] | None = None,
    host: preflight.Host | None = None,
    adviser: advice_mod.Adviser | None = None,
) -> Cheapest | None:
    """The newest release whose cheapest toolchain for ``arch`` passes preflight."""
    given, pinned = pinned, pinned if pinned is not None else releases_mod.pinned()
    for v in releases(given):
        c = cheapest(v, arch, know=know, pinned=pinned, host=host, adviser=adviser)
        if c.cell is not None:
            return c
    return None
