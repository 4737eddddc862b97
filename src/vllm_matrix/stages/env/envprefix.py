"""An environment prefix read from its files, without running it: a Pixi/conda prefix or a
venv (``--env PATH``), for a target that is not the interpreter this tool runs in.

What is read, and from where:
- Python: ``lib/pythonX.Y/site-packages`` (a venv's ``pyvenv.cfg`` ``version`` first);
- torch: ``site-packages/torch/version.py`` (``__version__`` with its ``+cuXXX`` label and
  ``cuda``), else the ``torch-*.dist-info`` directory's name;
- nvcc: the CUDA version in the prefix's ``cuda.h`` (``#define CUDA_VERSION 12040``; conda's
  ``targets/x86_64-linux/include`` or ``include``) when ``bin/nvcc`` is there, else the
  ``nvidia_cuda_nvcc*`` dist-info of a pip-installed nvcc (CUDA 13: ``nvidia/cu13/bin/nvcc``;
  the cu12 wheels carry ptxas only, no nvcc -- /work/shared/facts.md).
Nothing is imported or executed, so a prefix of another machine's layout (copied, mounted)
reads the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.sources.torchwheel import read_version_py

_CUDA_H = re.compile(r"#define\s+CUDA_VERSION\s+(\d+)")


@dataclass(frozen=True)
class PrefixFacts:
    prefix: Path
    kind: str  # "pixi" | "conda" | "venv" | "prefix"
    python: str | None  # "3.12"
    torch: str | None  # "2.6.0+cu124"
    torch_cuda: str | None  # "12.4" (torch.version.cuda)
    nvcc: str | None  # "12.4" (major.minor)
    read: tuple[str, ...]  # what each fact was read from, relative to the prefix
    site: Path | None = None  # lib/pythonX.Y/site-packages

    @property
    def torch_version(self) -> str | None:
        return self.torch.split("+")[0] if self.torch else None

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": str(self.prefix),
            "kind": self.kind,
            "python": self.python,
            "torch": self.torch,
            "torch_cuda": self.torch_cuda,
            "nvcc": self.nvcc,
            "read": list(self.read),
        }

    def line(self) -> str:
        return (
            f"{self.kind} env {self.prefix}: Python {self.python or '?'}, "
            f"torch {self.torch or 'none'}"
            + (f" (CUDA {self.torch_cuda})" if self.torch_cuda else "")
            + f", nvcc {self.nvcc or 'none'}"
        )


def _kind(prefix: Path) -> str:
    if (prefix / "conda-meta").is_dir():
        return "pixi" if ".pixi" in prefix.parts else "conda"
    if (prefix / "pyvenv.cfg").is_file():
        return "venv"
    return "prefix"


def _site(prefix: Path) -> tuple[str | None, Path | None]:
    cfg = prefix / "pyvenv.cfg"
    want = None
    if cfg.is_file():
        m = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", cfg.read_text(), re.M)
        want = m.group(1) if m else None
    libs = sorted(
        (p for p in (prefix / "lib").glob("python3.*") if (p / "site-packages").is_dir()),
        key=lambda p: Version(p.name[len("python") :]) if _is_ver(p.name[6:]) else Version("0"),
    )
    for lib in reversed(libs):
        py = lib.name[len("python") :]
        if want is None or py == want:
            return py, lib / "site-packages"
    return want, None


def _is_ver(s: str) -> bool:
    try:
        Version(s)
    except InvalidVersion:
        return False
    return True


def _torch(site: Path) -> tuple[str | None, str | None, str]:
    vp = site / "torch" / "version.py"
    if vp.is_file():
        v, cuda = read_version_py(vp.read_text(errors="replace"))
        if v:
            return v, cuda, "torch/version.py"
    for d in sorted(site.glob("torch-*.dist-info")):
        v = d.name[len("torch-") : -len(".dist-info")]
        m = re.search(r"\+cu(\d+)(\d)$", v)
        return v, f"{m.group(1)}.{m.group(2)}" if m else None, d.name
    return None, None, ""


def _cuda_h(root: Path) -> str | None:
    for h in (
        root / "targets" / "x86_64-linux" / "include" / "cuda.h",
        root / "include" / "cuda.h",
    ):
        if h.is_file():
            m = _CUDA_H.search(h.read_text(errors="replace"))
            if m:
                n = int(m.group(1))
                return f"{n // 1000}.{(n % 1000) // 10}"
    return None


def _nvcc(prefix: Path, site: Path | None) -> tuple[str | None, str]:
    if (prefix / "bin" / "nvcc").exists():
        v = _cuda_h(prefix)
        if v:
            return v, "bin/nvcc + cuda.h CUDA_VERSION"
        vj = prefix / "version.json"
        if vj.is_file():
            m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"(\d+\.\d+)', vj.read_text())
            if m:
                return m.group(1), "bin/nvcc + version.json"
        for meta in sorted((prefix / "conda-meta").glob("cuda-nvcc-[0-9]*.json")):
            m = re.match(r"cuda-nvcc-(\d+)\.(\d+)", meta.name)
            if m:
                return f"{m.group(1)}.{m.group(2)}", f"conda-meta/{meta.name}"
    if site is not None:
        for d in sorted(site.glob("nvidia_cuda_nvcc*.dist-info")):
            m = re.search(r"-(\d+)\.(\d+)[\d.]*\.dist-info$", d.name)
            has = list((site / "nvidia").glob("cu*/bin/nvcc")) + list(
                (site / "nvidia").glob("cuda_nvcc/bin/nvcc")
            )
            if m and has:
                return f"{m.group(1)}.{m.group(2)}", d.name
    return None, ""


def read_prefix(path: Path) -> PrefixFacts:
    prefix = path.expanduser()
    if (prefix / ".pixi" / "envs" / "default").is_dir():  # a Pixi project root
        prefix = prefix / ".pixi" / "envs" / "default"
    if not prefix.is_dir():
        raise ConfigError(
            f"--env {path}: no such directory",
            fix="pass an environment prefix (a venv, $CONDA_PREFIX, a Pixi project or "
            "its .pixi/envs/<name>)",
        )
    py, site = _site(prefix)
    read: list[str] = []
    torch = cuda = None
    if site is not None:
        torch, cuda, how = _torch(site)
        if torch:
            read.append(f"torch from {how}")
    nvcc, how = _nvcc(prefix, site)
    if nvcc:
        read.append(f"nvcc from {how}")
    if py:
        read.append(f"Python from lib/python{py}")
    if not read:
        raise ConfigError(
            f"--env {path}: no Python, torch or nvcc found in it",
            fix="pass the environment's prefix (the directory holding bin/ and lib/)",
        )
    return PrefixFacts(prefix, _kind(prefix), py, torch, cuda, nvcc, tuple(read), site)


__all__ = ["PrefixFacts", "read_prefix"]
