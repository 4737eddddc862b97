"""Preflight: rules over source facts + toolchain knowledge → a predicted verdict.

Every rule returns Findings with a message, a fix naming the nearest working
alternative, and the evidence (file:line in the vLLM tree, or the data-file
source) it rests on. Nothing is compiled here; this takes milliseconds.

The package holds what feeds the rules: ``apiscan`` (torch C++ API symbols the cell's torch
lacks), ``gates`` (arch-gated kernel families), ``modelopt`` and ``fp8gemm`` (the ModelOpt
FP8 column: the release's parser, the FP8 GEMM it dispatches per arch). May import:
sources, cmake, gpu, knowledge, infra, and other stages' public names (facts).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.version import Version

from vllm_matrix.infra import proc, programs
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import (
    FAIL,
    PASS,
    PREDICTED_FAIL,
    SKIP,
    WARN,
    Finding,
    StageResult,
    Status,
)
from vllm_matrix.knowledge.toolchains import ApiSymbol, Knowledge, TorchFacts
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.preflight import apiscan, gates

CUDA_ROOTS = Path("/usr/local")


@dataclass(frozen=True)
class Host:
    """The machine-side facts preflight needs (injected in tests)."""

    gcc_major: int | None
    system_cuda: dict[str, Path]  # "13.0" -> root
    conda_prefix: Path | None


@cache
def detect_host() -> Host:
    gcc = None
    cc = os.environ.get("CC") or programs.find("gcc")
    if cc:
        out = (proc.output_of([cc, "-dumpversion"], timeout=30) or "").strip()
        gcc = int(out.split(".")[0]) if out.split(".")[0].isdigit() else None
    roots: dict[str, Path] = {}
    candidates = [Path(os.environ["CUDA_HOME"])] if os.environ.get("CUDA_HOME") else []
    candidates += sorted(CUDA_ROOTS.glob("cuda*"))
    for root in candidates:
        v = _cuda_version(root)
        if v and (root / "bin" / "nvcc").exists():
            roots.setdefault(v, root)
    prefix = os.environ.get("CONDA_PREFIX")
    return Host(gcc, roots, Path(prefix) if prefix else None)


def _cuda_version(root: Path) -> str | None:
    vj = root / "version.json"
    if vj.is_file():
        m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"(\d+\.\d+)', vj.read_text())
        if m:
            return m.group(1)
    m = re.search(r"cuda-(\d+\.\d+)$", root.name)
    return m.group(1) if m else None


def _torch_hint(k: Knowledge, arch: str) -> str:
    t = k.min_torch_for(arch)
    return f"torch ≥ {t.label}" if t else "a torch built for it (none known)"


def _vllm_hint(k: Knowledge, pins: dict[str, str], arch: str, vllm: str = "") -> str:
    t = k.min_torch_for(arch)
    if not t or not pins:
        return ""
    ok = [v for v, p in pins.items() if Version(p) >= Version(t.version)]
    out = f", i.e. vLLM ≥ {min(ok, key=Version)}" if ok else ""
    paths = _pin_paths(k, pins, arch)
    if paths:
        out += f" ({paths})"
    own = pins.get(vllm)
    if own:
        builds = [f for f in k.variants_of(own) if f.runs_on(arch)]
        if builds:
            b = min(builds, key=lambda f: Version(f.cuda))
            out += (
                f"; vLLM {vllm} itself builds for it with its pinned torch as {b.label} "
                f"and CUDA ≥ {max(b.cuda, k.min_nvcc_for(arch) or b.cuda, key=Version)}"
            )
    return out


def _pin_paths(k: Knowledge, pins: dict[str, str], arch: str, groups: int = 2) -> str:
    """The first releases that build for ``arch`` with their own pinned torch, grouped
    by pin: '0.9.0–0.9.2 with torch 2.7.0+cu128; 0.10.0–0.10.1.1 with torch 2.7.1+cu128'."""
    by_pin: dict[str, list[str]] = {}
    for v in sorted((v for v in pins if not Version(v).is_prerelease), key=Version):
        by_pin.setdefault(pins[v], []).append(v)
    out = []
    for pin, vs in sorted(by_pin.items(), key=lambda kv: Version(kv[0])):
        builds = [f for f in k.variants_of(pin) if f.runs_on(arch)]
        if not builds:
            continue
        b = min(builds, key=lambda f: Version(f.cuda))
        span = vs[0] if len(vs) == 1 else f"{vs[0]}–{vs[-1]}"
        nvcc = max(b.cuda, k.min_nvcc_for(arch) or b.cuda, key=Version)
        out.append(f"{span} with torch {b.label} and CUDA ≥ {nvcc}")
        if len(out) == groups:
            break
    return "; ".join(out) + (", their own pins" if out else "")


def _same_torch_hint(pins: dict[str, str], torch: str) -> str:
    same = [v for v, p in pins.items() if Version(p) == Version(torch)]
    return (
        f", or vLLM {max(same, key=Version)} (the newest pinned to torch {torch})" if same else ""
    )


def check(
    cell: Cell,
    facts: SourceFacts,
    know: Knowledge,
    tree: Path | None,
    host: Host,
    pins: dict[str, str] | None = None,
    scan: Callable[[tuple[ApiSymbol, ...]], list[apiscan.ApiHit]] | None = None,
    kernel_gates: tuple[gates.Gate, ...] | None = None,
) -> list[Finding]:
    """``scan``/``kernel_gates``: the tree's API hits and gates when already known (the map
    reads them once per release, from its facts cache or the committed snapshot); with both
    given the tree is not read, and may be None (its sdist need not be here)."""

    def need_tree() -> Path:
        if tree is None:
            raise ValueError("preflight.check without a tree needs scan and kernel_gates")
        return tree

    find = scan or (lambda symbols: apiscan.scan(need_tree(), symbols))
    pins = pins or {}
    out: list[Finding] = []
    add = out.append
    nv = know.nvcc_for(cell.cuda)
    tf: TorchFacts | None = know.torch_facts(cell.torch)
    ver = f"vLLM {facts.vllm}"
    torch_v = cell.torch_version
    tl = tf.label if tf else cell.torch  # "2.7.1+cu128"

    # --- Python -------------------------------------------------------------
    if facts.python and cell.python not in facts.python:
        add(
            Finding(
                "python-cmake",
                "fail",
                f"{ver}'s CMake accepts Python {', '.join(facts.python)}, not {cell.python}",
                f"use Python {facts.python[-1]}",
                (facts.python_evidence or "CMakeLists.txt: PYTHON_SUPPORTED_VERSIONS",),
            )
        )
    if tf and tf.pythons and cell.python not in tf.pythons:
        add(
            Finding(
                "python-torch",
                "fail",
                f"torch {cell.torch} has no wheel for Python {cell.python} "
                f"(has {', '.join(tf.pythons)})",
                f"use Python {tf.pythons[-1]}",
                (tf.source,),
            )
        )

    # --- what the readers could not read -----------------------------------
    for gap in facts.gaps:
        add(unreadable(ver, gap.evidence, gap.what, gap.rests))

    # --- torch pin ----------------------------------------------------------
    if facts.torch and Version(facts.torch) != Version(torch_v):
        add(
            Finding(
                "torch-pin",
                "warn",
                f"{ver} pins torch {facts.torch}, the cell uses {cell.torch} "
                "(vLLM's CMake only warns)",
                "build with --no-build-isolation and the pins neutralised (use_existing_torch)",
                (facts.torch_evidence or "",),
                "https://github.com/vllm-project/vllm/issues/21745",
            )
        )
    if tf is None:
        add(
            Finding(
                "torch-known",
                "warn",
                f"no wheel facts for torch {cell.torch}: arch/CUDA rules not checked",
                f"run `inv derive-torch --version {cell.torch}` (with its index configured) "
                "and add it to knowledge/data/toolchains.toml, or add its documented facts "
                "with their "
                "source",
            )
        )
    else:
        add(
            Finding(
                "torch-facts",
                "warn" if tf.basis != "measured" else "info",
                f"torch {tl} facts (CUDA {tf.cuda}, arches, Pythons"
                + (
                    f", {'C++11' if tf.cxx11_abi else 'pre-C++11'} ABI"
                    if tf.cxx11_abi is not None
                    else ""
                )
                + f"): {tf.basis_text}",
                ""
                if tf.basis == "measured"
                else f"`inv derive-torch --version {tl}` where its index is reachable",
                (tf.source,),
            )
        )
    if nv is None:
        add(
            Finding(
                "nvcc-known",
                "warn",
                f"no facts for nvcc {cell.cuda}: arch/gcc rules not checked",
                "add it to knowledge/data/toolchains.toml from `nvcc --list-gpu-arch`",
            )
        )

    # --- arches ---------------------------------------------------------------
    vllm_archs = facts.archs_for(cell.cuda)
    for arch in cell.arch:
        target = Arch.parse(arch)
        sm = target.sm
        if nv and not nv.can_target(arch):
            need = know.min_nvcc_for(arch)
            alt = (
                f"use CUDA ≥ {need} and {_torch_hint(know, arch)}"
                f"{_vllm_hint(know, pins, arch, facts.vllm)}"
            )
            dropped_too_old = nv.archs and target.number < Arch.parse(nv.archs[0]).number
            if dropped_too_old:
                older = [v for v, f in know.nvcc.items() if f.can_target(arch)]
                newest_ok = max(older, key=Version) if older else None
                alt = (
                    f"use CUDA ≤ {newest_ok} (the newest nvcc that still targets it)"
                    if newest_ok
                    else "no known nvcc targets it"
                )
            add(
                Finding(
                    "nvcc-arch",
                    "fail",
                    f"nvcc {cell.cuda} cannot target {sm} ({nv.excludes_side(arch)})"
                    + _vllm_lists(facts, cell.cuda, arch),
                    alt if (need or dropped_too_old) else "no known nvcc targets it",
                    (nv.source,),
                    "https://github.com/vllm-project/vllm/issues/8665",
                )
            )
        if nv and nv.can_target(arch):
            add(Finding("nvcc-arch", "info", f"nvcc {cell.cuda} targets {sm}", "", (nv.source,)))
        if tf and tf.runs_on(arch):
            add(
                Finding(
                    "torch-arch",
                    "info",
                    f"torch {tl} has kernels that run on {sm} ({tf.basis_text})",
                    "",
                    (tf.source,),
                )
            )
        base = target.base.name
        if vllm_archs and base not in vllm_archs:
            rule = next((r for r in facts.cuda_archs if r.archs == vllm_archs), None)
            gated = next(
                (
                    r
                    for r in facts.cuda_archs
                    if r.min_nvcc and base in r.archs and r.archs != vllm_archs
                ),
                None,
            )
            why = (
                f": it is gated on nvcc ≥ {gated.min_nvcc} (CMakeLists.txt:{gated.line}) and "
                f"dropped silently with nvcc {cell.cuda}: the build succeeds with no {sm} "
                "kernels"
                if gated
                else ""
            )
            add(
                Finding(
                    "vllm-arch",
                    "fail",
                    f"{ver} with nvcc {cell.cuda} builds no kernels for {sm} "
                    f"(CUDA_SUPPORTED_ARCHS {';'.join(vllm_archs)}){why}",
                    f"CUDA ≥ {gated.min_nvcc}"
                    if gated
                    else "pick a vLLM (and nvcc) whose CUDA_SUPPORTED_ARCHS include it",
                    tuple(f"CMakeLists.txt:{r.line}" for r in (rule, gated) if r is not None)
                    or ("CMakeLists.txt",),
                )
            )
        if tf and not tf.runs_on(arch):
            ptx = f"PTX {', '.join(tf.ptx)}" if tf.ptx else "no PTX"
            add(
                Finding(
                    "torch-arch",
                    "fail",
                    f"torch {tl} has no kernels for {sm} "
                    f"(SASS {', '.join(Arch.parse(a).base.sm for a in tf.sass)}; {ptx})",
                    f"use {_torch_hint(know, arch)}{_vllm_hint(know, pins, arch, facts.vllm)}",
                    (tf.source,),
                    "https://github.com/vllm-project/vllm/issues/13306",
                )
            )

    # --- CUDA versions ----------------------------------------------------------
    if tf and tf.cuda:
        tmaj, cmaj = Version(tf.cuda).major, Version(cell.cuda).major
        if tmaj != cmaj:
            add(
                Finding(
                    "cuda-major",
                    "fail",
                    f"nvcc {cell.cuda} vs torch {tl} built with CUDA {tf.cuda}: "
                    "major versions differ",
                    f"use a CUDA {tmaj}.x toolkit (torch's own is {tf.cuda})",
                    (tf.source,),
                    "https://github.com/vllm-project/vllm/issues/2219",
                )
            )
        elif Version(cell.cuda) < Version(tf.cuda):
            add(
                Finding(
                    "cuda-minor",
                    "warn",
                    f"nvcc {cell.cuda} is older than torch's CUDA {tf.cuda} (same major: "
                    "compiles; the wheel needs a driver for CUDA ≥ "
                    f"{tf.cuda} at run time anyway)",
                    f"CUDA {tf.cuda} if you can get it",
                    (tf.source,),
                )
            )

    # --- API scan ---------------------------------------------------------------
    newer = tuple(s for s in know.api if Version(s.torch) > Version(torch_v))
    for sym in newer:
        hits = find((sym,))
        if hits:
            first = hits[0]
            add(
                Finding(
                    "api-" + sym.name,
                    "fail",
                    f"{first.where} uses {sym.name}, introduced in torch {sym.torch}: "
                    f"`{first.text[:100]}`",
                    f"torch ≥ {sym.torch} (vLLM {facts.vllm} pins {facts.torch})"
                    + _same_torch_hint(pins, torch_v),
                    tuple(h.where for h in hits),
                    sym.source,
                )
            )

    # --- torch <= 2.7's CMake and CUDA >= 12.9's missing libnvToolsExt --------------
    nvtx = nvtx_finding(cell, torch_v)
    if nvtx is not None:
        add(nvtx)

    # --- host compiler ------------------------------------------------------------
    if nv and nv.max_gcc and host.gcc_major and host.gcc_major > nv.max_gcc:
        add(
            Finding(
                "host-gcc",
                "fail",
                f"host gcc {host.gcc_major} is newer than nvcc {cell.cuda} accepts "
                f"(≤ {nv.max_gcc})",
                f"install gcc-{nv.max_gcc} and set CC/CXX/CUDAHOSTCXX, "
                "or pass -allow-unsupported-compiler",
                (nv.source,),
                "https://github.com/instructlab/instructlab/issues/2169",
            )
        )

    # --- arch-gated kernel families (information: what this nvcc builds for the arch) ---
    all_gates = gates.gates(need_tree()) if kernel_gates is None else kernel_gates
    for arch in cell.arch:
        for g in gates.for_arch(all_gates, arch):
            built = g.built_with(cell.cuda)
            names = ", ".join(Path(s).name for s in g.sources[:3]) or g.var
            add(
                Finding(
                    "kernel-gate",
                    "info",
                    f"{ver} compiles {g.var} ({names}) for {';'.join(g.archs)} only with "
                    f"{g.needs()}: {'built' if built else 'NOT built'} with nvcc {cell.cuda}",
                    "" if built else f"CUDA {g.nvcc} or newer",
                    (g.where,),
                )
            )

    # --- obtainability: how deep the evidence can go here, never the verdict --------
    # (answers are about the asker's machine: every rule above is judged
    # whatever this machine has; a later stage that needs the toolkit says SKIPPED.)
    reason = toolkit_unavailable(cell, know, host)
    if reason:
        add(Finding("toolkit-obtainable", "info", f"{NOT_HERE}{reason[0]}", reason[1]))
    return out


NOT_HERE = "not compiled here: "


# torch's CMake config (Caffe2/public/cuda.cmake) of releases before 2.8 links
# CUDA::nvToolsExt unless it finds nvtx3 in torch's own source tree (absent from wheels).
NVTX3_TORCH = "2.8.0"
NO_NVTOOLSEXT_CUDA = "12.9"


def nvtx_finding(cell: Cell, torch_v: str) -> Finding | None:
    """torch < 2.8 with CUDA >= 12.9: libnvToolsExt is gone from the toolkit.

    The nvtx fixup (fixups.py) points torch's FindCUDAToolkit at the pip nvidia-nvtx
    package through NVTOOLSEXT_PATH: torch's own dependency, so a managed env (torch with
    its dependencies) has it. An active conda/pixi env may not: configure then fails.
    """
    if Version(torch_v) >= Version(NVTX3_TORCH):
        return None
    if Version(cell.cuda) < Version(NO_NVTOOLSEXT_CUDA):
        return None
    base = (
        f"torch {cell.torch}'s CMake config links CUDA::nvToolsExt, which CUDA {cell.cuda} "
        "no longer ships (≥ 12.9 has only the header-only nvtx3)"
    )
    refs = (
        "https://github.com/vllm-project/vllm/issues/20892",
        "https://github.com/pytorch/pytorch/issues/155196",
    )
    if cell.env == "managed" and cell.provider != "conda-prefix":
        return Finding(
            "torch-nvtx",
            "warn",
            base + ": the nvtx fixup rescues it (NVTOOLSEXT_PATH → the nvidia-nvtx wheel "
            "that torch depends on, with the unversioned libnvToolsExt.so link CMake needs)",
            "nothing to do in a managed env; elsewhere install nvidia-nvtx-cu12 ≤ 12.8 or "
            "use torch ≥ 2.8",
            refs,
            refs[0],
        )
    return Finding(
        "torch-nvtx",
        "fail",
        base + ": CMake configure fails ('torch::nvtoolsext … CUDA::nvToolsExt but the target "
        "was not found') unless the env has an nvToolsExt library for the fixup to point at",
        "pip install nvidia-nvtx-cu12 (≤ 12.8) into the env, or use torch ≥ 2.8 "
        "(nvtx3, header-only), or CUDA ≤ 12.8",
        refs,
        refs[0],
    )


def _vllm_lists(facts: SourceFacts, cuda: str, arch: str) -> str:
    """What vLLM's CMake does with an arch this nvcc cannot target: list it anyway
    (0.8.x: nvcc then fails on it) or not (≥ 0.9: gated on the nvcc version)."""
    base = Arch.parse(arch).base.name
    listed = facts.archs_for(cuda)
    if listed and base in listed:
        rule = next((r for r in facts.cuda_archs if r.archs == listed), None)
        where = f" (CMakeLists.txt:{rule.line})" if rule else ""
        return (
            f"; vLLM {facts.vllm} lists {base} in CUDA_SUPPORTED_ARCHS for this nvcc{where}, "
            f"so nvcc itself fails on {Arch.parse(arch).base.compute}"
        )
    return ""


def toolkit_unavailable(cell: Cell, know: Knowledge, host: Host) -> tuple[str, str] | None:
    """Why the cell's toolkit can't be had on this machine, with the fix; None if it can."""
    p = cell.provider
    if p == "system":
        if cell.cuda in host.system_cuda:
            return None
        # versions only: results and reports name no path of the machine that made them
        have = ", ".join(sorted(host.system_cuda)) or "none"
        return (
            f"no system CUDA {cell.cuda} on this machine (found: {have})",
            f"install CUDA {cell.cuda} or point CUDA_HOME at it",
        )
    if p == "conda-prefix":
        if host.conda_prefix and (host.conda_prefix / "bin" / "nvcc").exists():
            return None
        return (
            "no conda/pixi env with nvcc is active (CONDA_PREFIX)",
            "run inside the env: pixi run inv ...",
        )
    pf = know.providers.get(p)
    if pf is None:
        return (f"provider {p} has no facts", "add it to knowledge/data/toolchains.toml")
    if cell.cuda not in pf.versions:
        return (
            f"provider {p} cannot supply CUDA {cell.cuda} here "
            f"(it can: {', '.join(pf.versions)}){'; ' + pf.note if pf.note else ''}",
            f"use CUDA {' or '.join(pf.versions)} with provider {p}, or a system install",
        )
    return None


def status_of(findings: list[Finding]) -> Status:
    levels = {f.level for f in findings}
    if "fail" in levels:
        return PREDICTED_FAIL
    if "skip" in levels:
        return SKIP
    if "warn" in levels:
        return WARN
    return PASS


UNREADABLE_FIX = (
    "nothing for the build: the tool's reader does not know this construct yet; "
    "`nox -s currency` lists such gaps (report it with the release and file:line)"
)


def unreadable(ver: str, where: str, what: str, rests: str) -> Finding:
    """A fact a reader could not read: a warning naming file:line and what rests on it."""
    return Finding(
        "unreadable",
        "warn",
        f"{ver}: {where}: could not read {what}; {rests} rests on it and is not judged",
        UNREADABLE_FIX,
        (where,),
    )


def summary_of(findings: list[Finding]) -> str:
    fails = [f for f in findings if f.level == "fail"]
    if fails:
        return f"{len(fails)} rule(s) predict failure: " + ", ".join(f.rule for f in fails)
    skips = [f for f in findings if f.level == "skip"]
    if skips:
        return skips[0].message
    warns = [f for f in findings if f.level == "warn"]
    return f"go ({len(warns)} warning(s))" if warns else "go"


def modelopt_column(cell: Cell, facts: SourceFacts) -> tuple[str, str]:
    """The 'ModelOpt FP8' column (short answer) and the file:line it rests on."""
    mo = facts.modelopt
    ev = mo.evidence or ""
    gap = next((g for g in facts.gaps if g.rests.startswith("the ModelOpt FP8")), None)
    if gap is not None:
        return f"unknown: {gap.evidence} could not be read", gap.evidence
    if not mo.supported:
        return "no (not in this vLLM)", ev
    cap = mo.fp8_min_capability
    if cap is None:
        return "yes (no capability floor found)", ev
    low = [Arch.parse(a) for a in cell.arch if Arch.parse(a).number < cap]
    if low:
        return f"no: {', '.join(a.tag for a in low)} < sm{cap}", ev
    return f"yes (sm{cap}+)", ev


def prediction_check(pre: StageResult | None, compiled: Status) -> Finding | None:
    """--force past a predicted failure: whether the compile that went on (the probe's
    status ``compiled``) agrees with the prediction. None where nothing was predicted."""
    if pre is None or pre.status != PREDICTED_FAIL:
        return None
    agree = compiled == FAIL
    return Finding(
        "prediction-check",
        "info" if agree else "warn",
        "preflight predicted failure; the probe "
        + ("agrees" if agree else "compiled the units it chose without error"),
        "" if agree else "the probe cannot see every unit: check the rule",
        tuple(f.rule for f in pre.findings if f.level == "fail"),
    )
