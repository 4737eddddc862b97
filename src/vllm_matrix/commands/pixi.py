"""`inv pixi-snippet`: the pyproject.toml pieces that reproduce a cell in a Pixi project.

Computed from the fixups a real run of the cell used (results/<cell>.json, env stage):
each value is translated from our cache's paths to the Pixi env's ($CONDA_PREFIX), so
the snippet says what the build actually needed, not what a template guesses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from vllm_matrix.infra import datafiles, index, tomlfile
from vllm_matrix.infra.config import TORCH_INDEX_ENV, Cell
from vllm_matrix.infra.errors import MatrixError

PREFIX = "$CONDA_PREFIX"
# torch from a conda channel instead of a PyPI-style index: the channel is configuration
# (--torch-channel, else this variable), never written in the code.
TORCH_CHANNEL_ENV = "VLLM_MATRIX_TORCH_CHANNEL"
TARGET = f"{PREFIX}/targets/x86_64-linux"  # conda-forge's CUDA layout (cuda-*-dev recipes)
# Fixups that have no activation-env counterpart, and why.
NOT_IN_ACTIVATION = {"PATH": "pixi puts $CONDA_PREFIX/bin first on PATH itself"}


@dataclass(frozen=True)
class CondaPackage:
    name: str
    role: str
    source: str


@cache
def conda_packages() -> dict[str, CondaPackage]:
    path = datafiles.data_path("conda.toml")
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("package",), "the top level")
    out = {}
    for name, t in doc.data["package"].items():
        tomlfile.check_keys(doc, t, ("role", "source"), f"[package.{name}]")
        out[name] = CondaPackage(
            name,
            tomlfile.require(doc, t, "role", str, name),
            tomlfile.require(doc, t, "source", str, name),
        )
    return out


def used_fixups(results_dir: Path, cell: Cell) -> list[dict[str, str]]:
    """The fixups the cell's last run recorded (env stage)."""
    path = results_dir / f"{cell.id}.json"
    if path.exists():
        d = json.loads(path.read_text())
        for s in d.get("stages", []):
            if s["stage"] == "env" and "fixups" in s.get("details", {}):
                return list(s["details"]["fixups"]["set"])
    raise MatrixError(
        f"no recorded fixups for {cell.id}",
        fix=f"run the cell to the toolkit depth first: inv run --depth toolkit --cell {cell.id}",
    )


def translate(f: dict[str, str]) -> str | None:
    """Our value of a fixup -> its value inside a Pixi env; None = not an activation var."""
    name = f["name"]
    if name.startswith("link:") or name in NOT_IN_ACTIVATION:
        return None
    return {
        "CUDA_HOME": PREFIX,
        "CUDA_PATH": PREFIX,
        "CUDAToolkit_ROOT": PREFIX,
        "CUDACXX": f"{PREFIX}/bin/nvcc",
        "VLLM_PYTHON_EXECUTABLE": f"{PREFIX}/bin/python",
        # cuda-nvtx-dev installs include/nvToolsExt.h and lib/libnvToolsExt.so here
        "NVTOOLSEXT_PATH": TARGET,
    }.get(name, f["value"])


def torch_channel(flag: str | None) -> tuple[str, str] | None:
    """(channel, where it was configured), or None: torch comes from the index."""
    if flag:
        return flag, "--torch-channel"
    env = os.environ.get(TORCH_CHANNEL_ENV)
    return (env, TORCH_CHANNEL_ENV) if env else None


def _conda_torch(cell: Cell, channel: tuple[str, str]) -> tuple[str, list[str]]:
    """The pytorch dependency for a conda channel, and the lines naming the channel.

    conda-forge's pytorch recipe (pytorch-cpu-feedstock) tags each CUDA build's build
    string ``cuda<major><minor>...``: a variant (2.7.1+cu128) pins that build; a bare
    version takes the build of the cell's CUDA (cuda-version pins nvcc to the same)."""
    variant = cell.torch_variant
    cuda_tag = variant[2:] if variant else cell.cuda.replace(".", "")
    if variant and cuda_tag != cell.cuda.replace(".", ""):
        raise MatrixError(
            f"torch {cell.torch} is a CUDA {cuda_tag[:-1]}.{cuda_tag[-1]} build and the cell's "
            f"toolkit is CUDA {cell.cuda}: in a conda env cuda-version pins both to one release",
            fix="use a cell whose CUDA matches its torch variant, or take torch from the index "
            f"(unset {TORCH_CHANNEL_ENV})",
        )
    name, where = channel
    spec = f'{{ version = "=={cell.torch_version}", build = "cuda{cuda_tag}*" }}'
    return spec, [
        "[tool.pixi.workspace]",
        f"channels = [{_q(name)}]  # torch's channel: {where} (not checked from here)",
        "",
        "[tool.pixi.system-requirements]",
        f"cuda = {_q(cell.cuda.split('.')[0])}  # a CUDA build of pytorch needs __cuda",
        "",
    ]


def _q(v: str) -> str:
    return json.dumps(v)  # a TOML basic string is a JSON string for our values


def snippet(
    cell: Cell,
    used: list[dict[str, str]],
    *,
    max_jobs: int | None,
    cmake_min: str | None,
    max_gcc: int | None,
    vllm_dir: str = "extern/vllm",
    channel: tuple[str, str] | None = None,
) -> str:
    """``channel``: torch from that conda channel (``torch_channel``) instead of the index."""
    pk = conda_packages()
    deps: dict[str, str] = {
        "python": f"{cell.python}.*",
        "cuda-version": f"{cell.cuda}.*",
        "cuda-nvcc": "*",
        "cuda-cudart-dev": "*",
        "cuda-driver-dev": "*",
        "cuda-nvrtc-dev": "*",
        "cmake": f">={cmake_min}" if cmake_min else "*",
        "ninja": "*",
        "gxx": f"<{max_gcc + 1}" if max_gcc else "*",  # conda: 13.2 > 13, so "<14"
    }
    if any(f["name"] == "NVTOOLSEXT_PATH" for f in used):
        deps["cuda-nvtx-dev"] = "*"
    head: list[str] = []
    if channel:
        torch_spec, head = _conda_torch(cell, channel)
    missing = [n for n in deps if n != "python" and n not in pk]
    if missing:
        raise MatrixError(
            f"no conda-forge facts for {missing}", fix="add them to knowledge/data/conda.toml"
        )
    act: dict[str, str] = {}
    for f in used:
        v = translate(f)
        if v is not None:
            act[f["name"]] = v
    if max_jobs:
        act["MAX_JOBS"] = str(max_jobs)
    lines = [f"# vllm-matrix: reproduces cell {cell.id}", *head, "[tool.pixi.dependencies]"]
    for name, spec in deps.items():
        why = f"  # {pk[name].role}" if name in pk else ""
        lines.append(f"{name} = {_q(spec)}{why}")
    if channel:
        lines.append(f"pytorch = {torch_spec}  # {pk['pytorch'].role}")
    else:
        lines += [
            "",
            "[tool.pixi.pypi-dependencies]",
            f"torch = {_q('==' + cell.torch)}",
            "",
            "[tool.pixi.pypi-options]",
            f"index-url = {_q(index.index_url() + '/')}  # the index vllm-matrix used",
            *_variant_index(cell),
        ]
    lines += ["", "[tool.pixi.activation.env]"]
    lines += [f"{k} = {_q(v)}" for k, v in act.items()]
    cmd = f"python -m pip wheel -v --no-build-isolation --no-deps -w dist {vllm_dir}"
    lines += [
        "",
        "[tool.pixi.tasks]",
        f"build-vllm = {{ cmd = {_q(cmd)}, "
        f"description = {_q('build vLLM ' + cell.vllm + ' like vllm-matrix does')} }}",
    ]
    return "\n".join(lines) + "\n"


def _variant_index(cell: Cell) -> list[str]:
    """A torch variant (2.7.1+cu128) comes from its own per-CUDA index, as configured."""
    if not cell.torch_variant:
        return []
    found = cell.torch_index_url()
    if found is None:
        var = TORCH_INDEX_ENV.format(cell.torch_variant.upper())
        raise MatrixError(
            f"torch {cell.torch} comes from PyTorch's {cell.torch_variant} index, "
            "and none is configured",
            fix=f"set {var} or [torch-index] {cell.torch_variant} = URL in matrix.toml",
        )
    url, where = found
    return [f"extra-index-url = [{_q(url + '/')}]  # torch {cell.torch}: {where}"]


def parse(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)
