"""This machine's GPUs and driver: what ``doctor`` and the gpu stage ask first.

``nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader`` gives
each GPU's name, compute capability and the driver's version; the CUDA version the
driver runs (what a toolkit or a torch build must not exceed) comes from the driver API
(``cuDriverGetVersion`` in libcuda.so.1), else from the "CUDA Version: X.Y" in
nvidia-smi's banner. Where nvidia-smi is absent the driver API also gives each device's
capability and name. No GPU is a fact (an empty list), not an error.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, replace
from typing import Any

from vllm_matrix.infra import proc, programs
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import MatrixError

QUERY = ("--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader")
_BANNER_CUDA = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_cap: str  # "9.0"
    driver_version: str  # "580.159.04" (nvidia-smi), or "" from the driver API

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "compute_cap": self.compute_cap,
            "driver_version": self.driver_version,
        }


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[Gpu, ...]
    driver_cuda: str | None  # "13.0": the newest CUDA the driver runs
    source: str  # how it was read

    @property
    def archs(self) -> tuple[str, ...]:
        """The arch list to build for: each distinct capability, with the ``a`` suffix
        where vLLM's fastest kernels need it (9.0a: wgmma; 10.0a/12.0a: tcgen05/FP4)."""
        seen: list[str] = []
        for g in self.gpus:
            a = arch_for(g.compute_cap)
            if a not in seen:
                seen.append(a)
        return tuple(seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [g.to_json() for g in self.gpus],
            "driver_cuda": self.driver_cuda,
            "source": self.source,
            "archs": list(self.archs),
        }


def arch_for(cap: str) -> str:
    """ "9.0" -> "9.0a"; "8.9" -> "8.9": arch-specific features exist from Hopper on."""
    arch = Arch.parse(cap)
    return replace(arch, suffix="a").name if arch.major >= 9 else arch.name


def parse_query(text: str) -> tuple[Gpu, ...]:
    """Rows of the csv,noheader query (``NVIDIA H200, 9.0, 580.159.04``)."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not re.fullmatch(r"\d+\.\d+", parts[1]):
            continue
        gpus.append(Gpu(parts[0], parts[1], parts[2]))
    return tuple(gpus)


def parse_banner_cuda(text: str) -> str | None:
    m = _BANNER_CUDA.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def cuda_of(version: int) -> str:
    """cuDriverGetVersion's 13000 -> "13.0"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def _driver_api() -> tuple[str | None, tuple[Gpu, ...]]:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None, ()
    v = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
        return None, ()
    gpus: list[Gpu] = []
    if lib.cuInit(0) == 0:
        n = ctypes.c_int(0)
        lib.cuDeviceGetCount(ctypes.byref(n))
        for i in range(n.value):
            dev = ctypes.c_int(0)
            if lib.cuDeviceGet(ctypes.byref(dev), i) != 0:
                continue
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
            lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
            name = ctypes.create_string_buffer(256)
            lib.cuDeviceGetName(name, 256, dev)
            gpus.append(
                Gpu(name.value.decode(errors="replace"), f"{major.value}.{minor.value}", "")
            )
    return cuda_of(v.value), tuple(gpus)


def detect() -> GpuReport:
    """The GPUs here (none: an empty report) and the driver's CUDA version: the one query
    of this machine's GPUs (doctor, the target, the gpu and model stages, a result's
    machine)."""
    smi = programs.find("nvidia-smi")
    api_cuda, api_gpus = _driver_api()
    if smi:
        try:
            q = proc.run([smi, *QUERY], check=False, timeout=60)
        except MatrixError:
            q = None
        gpus = parse_query(q.output) if q is not None and q.returncode == 0 else ()
        if gpus:
            cuda = api_cuda
            how = "nvidia-smi --query-gpu" + (" + cuDriverGetVersion" if cuda else "")
            if cuda is None:
                banner = proc.run([smi], check=False, timeout=60)
                cuda = parse_banner_cuda(banner.output)
                how += " + nvidia-smi banner" if cuda else ""
            return GpuReport(gpus, cuda, how)
    if api_gpus:
        return GpuReport(api_gpus, api_cuda, "driver API (no nvidia-smi)")
    return GpuReport((), api_cuda, "no GPU (nvidia-smi and the driver API found none)")


def names() -> tuple[str, ...]:
    """Each GPU's name, one per GPU (``("NVIDIA H200", "NVIDIA H200")``); none: ()."""
    return tuple(g.name for g in detect().gpus)


def _ver(v: str) -> tuple[int, int]:
    a, _, b = v.partition(".")
    return int(a), int(b or 0)


def newer_than_driver(what: str, cuda: str | None, driver_cuda: str | None) -> str | None:
    """A message when ``what`` (built for CUDA ``cuda``) needs a newer driver than this
    one; None when it runs (or either side is unknown). CUDA's minor-version
    compatibility lets a 12.x build run on any 12.y driver for most code, but the driver
    must be at least the toolkit's major; a newer minor can still fail at PTX JIT, so it
    is refused too (the conservative reading: toolkit <= driver)."""
    if not cuda or not driver_cuda:
        return None
    if _ver(cuda) > _ver(driver_cuda):
        return f"{what} is built for CUDA {cuda}, newer than this driver runs (CUDA {driver_cuda})"
    return None


# The first Linux driver branch that runs each CUDA release (NVIDIA's CUDA Toolkit
# release notes, "CUDA Toolkit and Corresponding Driver Versions").
MIN_DRIVER = {
    "11.8": "520",
    "12.1": "530",
    "12.4": "550",
    "12.6": "560",
    "12.8": "570",
    "12.9": "575",
    "13.0": "580",
}


def driver_fix(cuda: str, driver_cuda: str) -> str:
    need = MIN_DRIVER.get(cuda)
    drv = f"a driver of the R{need} branch or newer" if need else "a newer driver"
    return (
        f"install {drv} (it runs CUDA {cuda}), or use a torch and toolkit built for CUDA "
        f"<= {driver_cuda} (e.g. a +cu{driver_cuda.replace('.', '')} torch and CUDA "
        f"{driver_cuda}'s nvcc)"
    )


def check(
    report: GpuReport, nvcc: str | None, torch_version: str | None, torch_cuda: str | None
) -> list[tuple[str, str]]:
    """(problem, fix) for each of the toolkit and torch that this driver cannot run."""
    out = []
    for what, cuda in ((f"nvcc {nvcc}", nvcc), (f"torch {torch_version}", torch_cuda)):
        msg = newer_than_driver(what, cuda, report.driver_cuda)
        if msg and cuda and report.driver_cuda:
            out.append((msg, driver_fix(cuda, report.driver_cuda)))
    return out


__all__ = [
    "MIN_DRIVER",
    "Gpu",
    "GpuReport",
    "arch_for",
    "check",
    "cuda_of",
    "detect",
    "driver_fix",
    "names",
    "newer_than_driver",
    "parse_banner_cuda",
    "parse_query",
]
