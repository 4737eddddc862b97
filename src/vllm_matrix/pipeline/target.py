"""The target: the machine an answer is for, which is often not this one.

Described (``--arch 12.0``, ``--gpu "RTX 5090"``, ``--driver-cuda 12.8``, ``--env PREFIX``)
or detected (TORCH_CUDA_ARCH_LIST, the GPUs here and their driver). A described target
wins over anything this machine has; with neither, a command that needs an arch stops
with an error naming the ways to give one (exit 2), never a silent default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra.arch import Arch, parse_arch_list
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge import gpus, toolchains
from vllm_matrix.stages.env import envprefix


@dataclass(frozen=True)
class Target:
    archs: tuple[str, ...]  # () only when not required and nothing named one
    arch_from: str  # how the arch was had
    driver_cuda: str | None = None
    driver_from: str = ""
    env: envprefix.PrefixFacts | None = None

    def line(self) -> str:
        arch = ", ".join(Arch.parse(a).sm for a in self.archs) or "no arch"
        out = f"target: {arch} ({self.arch_from})"
        if self.driver_cuda:
            out += f"; driver runs CUDA ≤ {self.driver_cuda} ({self.driver_from})"
        if self.env:
            out += f"; {self.env.line()}"
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": list(self.archs),
            "arch_from": self.arch_from,
            "driver_cuda": self.driver_cuda,
            "driver_from": self.driver_from,
            "env": self.env.to_json() if self.env else None,
        }


def arch_choices() -> str:
    """The arches the knowledge has an nvcc for, for the error's fix."""
    know = toolchains.load()
    seen = sorted(
        {
            Arch.parse(a).base
            for n in know.nvcc.values()
            for a in n.archs
            if Arch.parse(a).major >= 7
        }
    )
    return " ".join(a.name for a in seen)


def no_arch_error() -> ConfigError:
    return ConfigError(
        "no target arch: no --arch, no --gpu, no TORCH_CUDA_ARCH_LIST and no GPU on this machine",
        fix='name the target: --arch 12.0 or --gpu "RTX 5090" (arches: '
        f"{arch_choices()}; GPU names: knowledge/data/gpus.toml)",
    )


def resolve(
    arch: str | None = None,
    gpu: str | None = None,
    driver_cuda: str | None = None,
    env: str | None = None,
    *,
    required: bool = True,
    detect: Callable[[], gpuinfo.GpuReport] | None = None,
) -> Target:
    prefix = envprefix.read_prefix(Path(env)) if env else None
    if arch and gpu:
        raise ConfigError("--arch and --gpu both name the target", fix="pass one of them")
    drv_from = "--driver-cuda" if driver_cuda else ""
    if arch and arch != "auto":
        return Target(parse_arch_list(arch), "--arch", driver_cuda, drv_from, prefix)
    if gpu:
        m = gpus.lookup(gpu)
        how = f"--gpu {gpu!r}: {m.name}, compute capability {m.cc} ({m.source})"
        return Target((m.cc,), how, driver_cuda, drv_from, prefix)
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if listed.strip():
        return Target(
            parse_arch_list(listed), "TORCH_CUDA_ARCH_LIST", driver_cuda, drv_from, prefix
        )
    here = (detect or gpuinfo.detect)()
    if here.gpus:
        names = ", ".join(sorted({g.name for g in here.gpus}))
        return Target(
            here.archs,
            f"the GPU here: {names}",
            driver_cuda or here.driver_cuda,
            drv_from or ("this machine's driver" if here.driver_cuda else ""),
            prefix,
        )
    if required:
        raise no_arch_error()
    return Target((), "none named and no GPU here", driver_cuda, drv_from, prefix)


__all__ = ["Target", "arch_choices", "no_arch_error", "resolve"]
