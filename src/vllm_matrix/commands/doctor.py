"""`inv doctor`: what a cell's (or the current env's) toolchain is, and what is wrong.

Reports nvcc (version, arches, host gcc limit), the host gcc, torch (version, its
CUDA, the arches compiled into it, C++ ABI), cmake/ninja, every fixup with its reason,
and every problem with its fix.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_matrix.commands import target as target_opts
from vllm_matrix.commands.common import load_matrix, one_cell
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import manifest, proc
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import toolchains
from vllm_matrix.pipeline import advice
from vllm_matrix.pipeline import target as target_mod
from vllm_matrix.sources import torchwheel
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import preflight, toolkit
from vllm_matrix.stages.env import envprefix, fixups
from vllm_matrix.stages.toolkit import base as tkbase


@dataclass
class Report:
    title: str
    toolkit: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    torch: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    fixups: list[dict[str, str]] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    gpu: dict[str, Any] = field(default_factory=dict)  # --env current: the GPUs, driver
    target: str = ""  # the machine the answer is for (pipeline/target.py)
    advice: list[str] = field(default_factory=list)  # the one advice's options
    verified: dict[str, str] = field(default_factory=dict)  # --verify: the caches hashed

    def problem(self, message: str, fix: str) -> None:
        self.problems.append({"message": message, "fix": fix})

    def to_json(self) -> dict[str, Any]:
        d = dict(vars(self))
        if not self.gpu:  # only --env current reads the GPUs
            d.pop("gpu")
        for k in ("target", "advice"):
            if not d[k]:
                d.pop(k)
        if not self.verified:  # only --verify hashes the caches
            d.pop("verified")
        return d

    def render(self) -> str:
        out = [self.title]
        if self.target:
            out.append(self.target)

        def section(name: str, d: dict[str, Any]) -> None:
            out.append(f"{name}:")
            for k, v in d.items():
                if k == "notes":
                    out.extend(f"  {'note':14} {n}" for n in v)
                    continue
                v = ", ".join(map(str, v)) if isinstance(v, list | tuple) else v
                out.append(f"  {k:14} {v}")

        section("nvcc", self.toolkit)
        section("host", self.host)
        section("torch", self.torch)
        section("tools", self.tools)
        if self.gpu:
            section("gpu", self.gpu)
        if self.verified:
            section("verified", self.verified)
        out.append("fixups:")
        out += [f"  {f['name']}={f['value']}\n      why: {f['reason']}" for f in self.fixups]
        out.append(f"problems: {len(self.problems) or 'none'}")
        out += [f"  - {p['message']}\n    fix: {p['fix']}" for p in self.problems]
        if self.advice:
            out.append("smallest change first (vLLM × torch build × CUDA toolkit; evidence):")
            out += [f"  {n}. {a}" for n, a in enumerate(self.advice, 1)]
        return "\n".join(out)


def _version_of(argv: list[str]) -> str | None:
    out = proc.output_of(argv)
    if out is None:
        return None
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else None


def torch_info(tv: env_mod.TorchEnv) -> dict[str, Any]:
    """What the installed torch is, read from its files (no import: a headers env has no
    CUDA runtime and would fail to import)."""
    info: dict[str, Any] = {
        "version": tv.torch_version,
        "torch.version.cuda": tv.torch_cuda,
        "python": str(tv.python_exe),
        "location": str(tv.torch_dir),
    }
    lib = tv.torch_dir / "lib" / "libtorch_python.so"
    if lib.exists():
        sass, ptx = torchwheel.arch_flags_of(lib)
        info["_sass"], info["_ptx"] = sass, ptx
        info["arch list"] = [Arch.parse(a).sm for a in sass] + [
            f"{Arch.parse(a).compute} (PTX)" for a in ptx
        ]
        if not ptx:
            info["arch list"].append("no PTX")
    cfg = tv.torch_cmake_prefix / "Torch" / "TorchConfig.cmake"
    if cfg.exists():
        m = re.search(r"_GLIBCXX_USE_CXX11_ABI=(\d)", cfg.read_text())
        info["C++ ABI"] = f"_GLIBCXX_USE_CXX11_ABI={m.group(1)}" if m else "not stated"
    return info


def _report(
    title: str,
    tk: toolkit.Toolkit,
    tv: env_mod.TorchEnv,
    archs: tuple[str, ...],
    cuda_wanted: str | None = None,
) -> Report:
    r = Report(title)
    r.toolkit = {
        "version": tk.full_version,
        "provider": tk.provider,
        "nvcc": str(tk.nvcc),
        "arches": [Arch.parse(a).compute for a in tk.archs],
        "max host gcc": tk.max_gcc,
        "notes": list(tk.notes),
    }
    host = preflight.detect_host()
    ok = tk.max_gcc is None or host.gcc_major is None or host.gcc_major <= tk.max_gcc
    r.host = {"gcc": host.gcc_major, "accepted by nvcc": "yes" if ok else "no"}
    if not ok:
        r.problem(
            f"host gcc {host.gcc_major} is newer than nvcc {tk.version} accepts (≤ {tk.max_gcc})",
            f"install gcc-{tk.max_gcc} and set CC/CXX/CUDAHOSTCXX, or pass "
            "-allow-unsupported-compiler",
        )
    r.torch = torch_info(tv)
    if tv.torch_cuda and tv.torch_cuda.split(".")[0] != tk.version.split(".")[0]:
        r.problem(
            f"torch is built with CUDA {tv.torch_cuda}, nvcc is {tk.version}: "
            "major versions differ",
            f"use a CUDA {tv.torch_cuda.split('.')[0]}.x toolkit",
        )
    fix_for_arch = _advise(r, tv.torch_version, tk.version, archs, tv.python)
    _torch_arch_problems(r, tv.torch_version, archs, fix_for_arch)
    nvcc_archs = sorted(Arch.parse(x).base for x in tk.archs)
    for a in map(Arch.parse, archs):
        if a.base.name not in tk.archs:
            older = bool(nvcc_archs) and a.base < nvcc_archs[0]
            side = (
                f"its archs start at {nvcc_archs[0].compute}"
                if older
                else f"its archs end at {nvcc_archs[-1].compute}"
                if nvcc_archs
                else "no arch list"
            )
            r.problem(
                f"nvcc {tk.version} cannot target {a.sm} ({side})",
                fix_for_arch
                or ("use an older CUDA toolkit" if older else "use a newer CUDA toolkit"),
            )
    cmake = tv.root / "bin" / "cmake"
    ninja = tv.root / "bin" / "ninja"
    r.tools = {
        "cmake": _version_of(
            [str(cmake if cmake.exists() else shutil.which("cmake") or "cmake"), "--version"]
        ),
        "ninja": _version_of(
            [str(ninja if ninja.exists() else shutil.which("ninja") or "ninja"), "--version"]
        ),
    }
    if r.tools["cmake"] is None:
        r.problem("no cmake found", "pip install 'cmake>=3.26' into the env")
    if r.tools["ninja"] is None:
        r.problem("no ninja found", "pip install ninja into the env")
    fx = fixups.compute(tk, tv, archs)
    r.fixups = [fixups.vars_of(f) for f in fx.items]
    for p in fx.problems:
        r.problem(p.message, p.fix)
    if cuda_wanted and cuda_wanted != tk.version:
        r.problem(
            f"the cell asks for CUDA {cuda_wanted}, the toolkit is {tk.version}",
            "fix the cell or the toolkit",
        )
    return r


def _advise(
    r: Report,
    torch: str | None,
    cuda: str | None,
    archs: tuple[str, ...],
    python: str | None,
    driver_cuda: str | None = None,
) -> str:
    """Fill the report's advice (the one advice, pipeline/advice.py) for this torch and
    nvcc on the target's arches; return the fix an arch problem names (its first option)."""
    if not torch or not cuda or not archs:
        return ""
    try:
        have = advice.Have(torch, cuda, archs, python or "3.12", driver_cuda=driver_cuda)
        a = advice.adviser_for(Path.cwd()).advise(have)
    except MatrixError:
        return ""
    r.advice = [o.text() for o in a.options]
    first = a.options[0] if a.options else None
    if first is None:
        return a.text()
    return f"{first.combo()} (option 1 below; {', '.join(first.changes) or 'no change'})"


def _torch_arch_problems(r: Report, torch: str | None, archs: tuple[str, ...], fix: str) -> None:
    """The torch in the env has no kernels for a target arch (read from its own
    libtorch_python.so arch list; where that is absent, from the knowledge)."""
    sass, ptx = r.torch.get("_sass"), r.torch.get("_ptx")
    r.torch.pop("_sass", None)
    r.torch.pop("_ptx", None)
    if sass is None and torch:
        tf = toolchains.load().torch_facts(torch)
        sass, ptx = (tf.sass, tf.ptx) if tf else (None, None)
    if sass is None:
        return
    for a in map(Arch.parse, archs):
        runs = any(a.base.runs_sass_of(Arch.parse(x).base) for x in sass) or any(
            a.base.jits_ptx_of(Arch.parse(x).base) for x in ptx or ()
        )
        if not runs:
            have = ", ".join(Arch.parse(x).sm for x in sass) + (
                f"; PTX {', '.join(ptx)}" if ptx else "; no PTX"
            )
            r.problem(
                f"torch {torch} has no kernels for {a.sm} (its arch list: {have}): "
                "vLLM built on it fails on this GPU with 'no kernel image is available'",
                fix or "a torch build with code for it",
            )


def for_cell(cell: Cell, verify: bool = False) -> Report:
    """The cell's toolchain (provided: a damaged cached toolkit or env is made again on
    the way); ``verify``: also every file of the cached toolkit and env against its
    manifest's sha256 (``doctor --verify``: reads GBs)."""
    tk = toolkit.provide(cell.provider, cell.cuda)
    tv = env_mod.provide(cell.python, cell.torch, "headers")
    r = _report(f"cell {cell.id}", tk, tv, cell.arch, cell.cuda)
    if verify:
        r.verified = verify_caches(tk, tv, r)
    return r


def verify_caches(tk: toolkit.Toolkit, tv: env_mod.TorchEnv, r: Report) -> dict[str, str]:
    """Every file of the cached toolkit (when the tool assembled it) and env, hashed and
    compared with its manifest; each damage a problem of ``r``."""
    out: dict[str, str] = {}
    checks: list[tuple[str, list[str]]] = []
    if (tk.root / tkbase.MARKER).is_file():
        checks.append((f"toolkit {tk.root.name}", tkbase.damage(tk.root, tk, full=True)))
    else:
        out[f"toolkit {tk.root}"] = "not verified: not assembled by vllm-matrix (no manifest)"
    checks.append((f"env {tv.root.name}", env_mod.damage(tv, full=True)))
    for what, found in checks:
        out[what] = "every file as assembled" if not found else f"{len(found)} file(s) differ"
        if found:
            r.problem(
                manifest.describe(f"the cached {what}", found, n=5),
                f"rerun the command: a damaged {what.split()[0]} is made again on its next use "
                f"(or delete {what.split()[1]} from the cache)",
            )
    return out


def for_current(archs: tuple[str, ...], gpus: gpuinfo.GpuReport | None = None) -> Report:
    """The active env's report; with no arch given (``--arch auto``), the arches of the
    GPUs here. The GPUs' driver must run the env's toolkit and torch."""
    tk = toolkit.current_toolkit()
    tv = env_mod.current_env()
    gpus = gpus if gpus is not None else gpuinfo.detect()
    if not archs and gpus.gpus:
        archs = gpus.archs
    r = _report(f"current env {sys.prefix}", tk, tv, archs)
    r.gpu = {
        "gpus": [
            f"{g.name} (compute {g.compute_cap}, driver {g.driver_version})" for g in gpus.gpus
        ]
        or ["none"],
        "driver CUDA": gpus.driver_cuda or "unknown",
        "arch list": list(archs) or ["none (no GPU and no --arch)"],
        "read by": gpus.source,
    }
    if not archs:
        err = target_mod.no_arch_error()
        r.problem(err.message, err.fix or "")
    for msg, fix in gpuinfo.check(gpus, tk.version, tv.torch_version, tv.torch_cuda):
        r.problem(msg, fix)
    return r


def active_prefix() -> Path | None:
    """The env the user is in, when it is not this interpreter's: $CONDA_PREFIX (conda,
    and Pixi's `pixi run`/`pixi shell`), $VIRTUAL_ENV, $PIXI_PROJECT_ROOT's default env."""
    here = Path(sys.prefix).resolve()
    for var, sub in (
        ("CONDA_PREFIX", ""),
        ("VIRTUAL_ENV", ""),
        ("PIXI_PROJECT_ROOT", ".pixi/envs/default"),
    ):
        v = os.environ.get(var)
        if not v:
            continue
        p = Path(v) / sub if sub else Path(v)
        if p.is_dir() and p.resolve() != here:
            return p
    return None


def for_prefix(pf: envprefix.PrefixFacts, tgt: target_mod.Target) -> Report:
    """An environment prefix read from its files (nothing in it is run), for the target."""
    r = Report(f"{pf.kind} env {pf.prefix} (read from its files, not run: {'; '.join(pf.read)})")
    r.target = tgt.line()
    know = toolchains.load()
    nv = know.nvcc_for(pf.nvcc) if pf.nvcc else None
    r.toolkit = {
        "version": pf.nvcc or "none in the env",
        "arches": [Arch.parse(a).compute for a in nv.archs] if nv else [],
        "max host gcc": nv.max_gcc if nv else None,
    }
    if pf.torch and pf.site is not None:
        tv = env_mod.TorchEnv(
            pf.python or "",
            pf.torch_version or "",
            "prefix",
            pf.prefix,
            pf.prefix / "bin" / "python",
            pf.site,
            pf.torch,
            pf.torch_cuda,
        )
        r.torch = torch_info(tv)
    else:
        r.torch = {"version": "none in the env"}
    fix = _advise(r, pf.torch, pf.nvcc or pf.torch_cuda, tgt.archs, pf.python, tgt.driver_cuda)
    if not tgt.archs:
        err = target_mod.no_arch_error()
        r.problem(err.message, err.fix or "")
    if not pf.torch:
        r.problem(f"no torch in {pf.prefix}", "install one: " + (fix or "pip install torch"))
    if not pf.nvcc:
        want = pf.torch_cuda or "the torch's CUDA"
        r.problem(
            f"no nvcc in {pf.prefix}: vLLM compiles CUDA code",
            f"add CUDA {want}'s compiler to the env (conda/Pixi: cuda-nvcc {want}.* with "
            "cuda-cudart-dev, libcublas-dev, libcusparse-dev, libcusolver-dev, libcurand-dev; "
            "CUDA 13 from PyPI: nvidia-cuda-nvcc)",
        )
    if pf.nvcc and pf.torch_cuda and pf.nvcc.split(".")[0] != pf.torch_cuda.split(".")[0]:
        r.problem(
            f"torch is built with CUDA {pf.torch_cuda}, nvcc is {pf.nvcc}: major versions differ",
            f"use a CUDA {pf.torch_cuda.split('.')[0]}.x toolkit",
        )
    _torch_arch_problems(r, pf.torch, tgt.archs, fix)
    for a in tgt.archs:
        if nv is not None and not nv.can_target(a):
            r.problem(
                f"nvcc {pf.nvcc} cannot target {Arch.parse(a).sm} ({nv.excludes_side(a)})",
                fix or "a newer CUDA toolkit",
            )
    if tgt.driver_cuda:
        rep = gpuinfo.GpuReport((), tgt.driver_cuda, tgt.driver_from)
        for msg, dfix in gpuinfo.check(rep, pf.nvcc, pf.torch, pf.torch_cuda):
            r.problem(msg, dfix)
    return r


def run(args: argparse.Namespace) -> int:
    """`doctor`: the active env, --env PATH, or a --cell's toolchain against the target."""
    prefix = active_prefix() if not args.env and not args.cell else None
    if args.env == "current" or (not args.env and not args.cell and prefix is None):
        tgt = target_opts.resolve(args, required=False)
        rep = for_current(tgt.archs)
    elif args.env or prefix is not None:
        tgt = target_opts.resolve(args, required=False)
        pf = tgt.env or envprefix.read_prefix(prefix or Path(args.env))
        rep = for_prefix(pf, tgt)
    else:
        m, _ = load_matrix(args)
        rep = for_cell(one_cell(m, args.cell), verify=args.verify)
    print(json.dumps(rep.to_json(), indent=1) if args.json else rep.render())
    return 1 if rep.problems else 0
