"""`inv doctor`: what a cell's (or the current env's) toolchain is, and what is wrong.

Reports nvcc (version, arches, host gcc limit), the host gcc, torch (version, its
CUDA, the arches compiled into it, C++ ABI), cmake/ninja, every fixup with its reason,
and every problem with its fix.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import manifest, proc
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import fixups, preflight, toolkit, torchwheel
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
    verified: dict[str, str] = field(default_factory=dict)  # --verify: the caches hashed

    def problem(self, message: str, fix: str) -> None:
        self.problems.append({"message": message, "fix": fix})

    def to_json(self) -> dict[str, Any]:
        d = dict(vars(self))
        if not self.gpu:  # only --env current reads the GPUs
            d.pop("gpu")
        if not self.verified:  # only --verify hashes the caches
            d.pop("verified")
        return d

    def render(self) -> str:
        out = [self.title]

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
                ("use an older CUDA toolkit" if older else "use a newer CUDA toolkit")
                + " (see `inv preflight`)",
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
    for msg, fix in gpuinfo.check(gpus, tk.version, tv.torch_version, tv.torch_cuda):
        r.problem(msg, fix)
    return r
