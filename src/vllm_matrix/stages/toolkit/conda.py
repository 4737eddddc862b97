"""The conda-prefix provider: an existing conda/pixi env, seen through a symlink view."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages.toolkit import base
from vllm_matrix.stages.toolkit.base import Toolkit

# Tools a conda env's bin/ may hold that belong in the toolkit's bin/.
CUDA_BIN_TOOLS = (
    "nvcc",
    "ptxas",
    "fatbinary",
    "nvlink",
    "cudafe++",
    "bin2c",
    "cuobjdump",
    "nvdisasm",
    "nvprune",
    "cu++filt",
    "__nvcc_device_query",
    "crt",
)
CONDA_TARGET = "targets/x86_64-linux"


def _first_dir(candidates: Iterable[Path], probe: Sequence[str]) -> Path | None:
    for d in candidates:
        if d.is_dir() and any((d / p).exists() for p in probe):
            return d
    return None


def conda_view(prefix: Path, view: Path) -> list[str]:
    """Fill ``view`` with a standard-layout symlink farm over a conda env's CUDA files.

    The env is not modified. bin/ holds links to the env's tools plus our own
    nvcc.profile: nvcc reads the profile next to the path it was started from,
    so the view's profile applies when nvcc is run as view/bin/nvcc.
    """
    target = prefix / CONDA_TARGET
    include = _first_dir([target / "include", prefix / "include"], ["cuda_runtime.h"])
    lib = _first_dir(
        [target / "lib", prefix / "lib64", prefix / "lib"], ["libcudart.so", "libcudart_static.a"]
    )
    nvvm = _first_dir([prefix / "nvvm", target / "nvvm"], ["bin/cicc"])
    missing = []
    if not (prefix / "bin" / "nvcc").exists():
        missing.append("bin/nvcc (cuda-nvcc)")
    if nvvm is None:
        missing.append("nvvm/bin/cicc (cuda-nvvm)")
    if include is None:
        missing.append("cuda_runtime.h (cuda-cudart-dev)")
    if lib is None:
        missing.append("libcudart (cuda-cudart-dev / cuda-cudart-static)")
    if missing:
        raise NotAvailable(
            f"the env at {prefix} lacks {', '.join(missing)}",
            fix="install cuda-nvcc and cuda-cudart-dev into the env",
        )
    assert include is not None and lib is not None and nvvm is not None
    bindir = view / "bin"
    bindir.mkdir(parents=True)
    for tool in CUDA_BIN_TOOLS:
        src = prefix / "bin" / tool
        if src.exists():
            (bindir / tool).symlink_to(src)
    (view / "nvvm").symlink_to(nvvm)
    (view / "include").symlink_to(include)
    (view / "lib64").symlink_to(lib)
    base.write_profile(view)
    return [
        f"symlink view of the env at {prefix}",
        f"include -> {include}, lib64 -> {lib}, nvvm -> {nvvm}",
        "bin/nvcc.profile is the view's own (relocatable), the env's is not used",
    ]


def provide(version: str, cache: Path, path: Path | None, log: Path | None) -> Toolkit:
    raw = path or (Path(os.environ["CONDA_PREFIX"]) if os.environ.get("CONDA_PREFIX") else None)
    if raw is None:
        raise NotAvailable(
            "no conda/pixi env given and $CONDA_PREFIX is not set",
            fix="activate the env (pixi shell / conda activate) or pass its path",
        )
    prefix = raw.resolve()
    if not (prefix / "bin" / "nvcc").exists():
        raise NotAvailable(
            f"no bin/nvcc in the env at {prefix}",
            fix="install cuda-nvcc (and cuda-cudart-dev) into the env",
        )
    tag = hashlib.sha256(str(prefix).encode()).hexdigest()[:12]
    final = base.toolkits_dir(cache) / f"conda-prefix-{version}-{tag}"

    def build(staging: Path) -> Toolkit:
        notes = conda_view(prefix, staging)
        tk = base.inspect_root(staging, "conda-prefix", notes, log=log, final_root=final)
        if tk.version != version:
            raise NotAvailable(
                f"the env at {prefix} has CUDA {tk.version}, not {version}",
                fix=f"install cuda-nvcc={version} into the env, or ask for CUDA {tk.version}",
            )
        return tk

    def links_resolve(tk: Toolkit) -> bool:
        # The env may have been removed or rebuilt since the view was made.
        return all((tk.root / d).exists() for d in ("bin/nvcc", "include", "lib64", "nvvm"))

    return base.build_cached(final, build, links_resolve)
