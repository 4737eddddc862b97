"""`inv pixi-snippet`: a pixi.toml that builds a cell's vLLM in a Pixi workspace.

Written from facts alone (no local toolkit, torch or earlier run needed): the release's
own build requirements (requirements/build*.txt, else pyproject's build-system), the
toolkit and compiler from conda-forge (knowledge/data/conda.toml, every name checked
against its feedstock), torch from the index that has the build (a +cu128 build from the
per-CUDA index configured as VLLM_MATRIX_TORCH_INDEX_CU128 / matrix.toml [torch-index]),
and the fixups the env stage would set, translated to the Pixi env ($CONDA_PREFIX). Where
a run of the cell recorded its fixups (results/<cell>.json), those are used instead.
The keys are Pixi's documented manifest keys (knowledge/data/pixi_manifest.schema.json
cites each); the tests hold the snippet to that schema.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from vllm_matrix.commands import target as target_opts
from vllm_matrix.commands.common import load_matrix, one_cell, say
from vllm_matrix.commands.release import release_cell
from vllm_matrix.infra import datafiles, index, results, tomlfile
from vllm_matrix.infra.config import TORCH_INDEX_ENV, Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import toolchains
from vllm_matrix.pipeline.context import Workspace
from vllm_matrix.sources import sdist as source_stage
from vllm_matrix.stages import facts as facts_stage
from vllm_matrix.stages import patches as patch_series

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
    tomlfile.check_keys(doc, doc.data, ("package", "pytorch-build"), "the top level")
    out = {}
    for name, t in doc.data["package"].items():
        tomlfile.check_keys(doc, t, ("role", "source"), f"[package.{name}]")
        out[name] = CondaPackage(
            name,
            tomlfile.require(doc, t, "role", str, name),
            tomlfile.require(doc, t, "source", str, name),
        )
    return out


@cache
def conda_torch_builds() -> dict[str, tuple[tuple[str, ...], str]]:
    """conda-forge's pytorch release -> (the CUDA versions it has builds for, source)."""
    doc = tomlfile.load(datafiles.data_path("conda.toml"))
    out = {}
    for version, t in doc.data.get("pytorch-build", {}).items():
        tomlfile.check_keys(doc, t, ("cuda", "source"), f"[pytorch-build.{version!r}]")
        out[version] = (
            tuple(str(x) for x in tomlfile.require(doc, t, "cuda", list, version)),
            tomlfile.require(doc, t, "source", str, version),
        )
    return out


def used_fixups(results_dir: Path, cell: Cell) -> list[dict[str, str]] | None:
    """The fixups the cell's last run recorded (env stage); None: no run recorded them."""
    path = results_dir / f"{cell.id}.json"
    if path.exists():
        d = json.loads(path.read_text())
        for s in d.get("stages", []):
            env = cast(results.EnvDetails, s.get("details", {}))
            if s["stage"] == "env" and "fixups" in env:
                return cast(list[dict[str, str]], list(env["fixups"]["set"]))
    return None


def planned_fixups(cell: Cell) -> list[dict[str, str]]:
    """The fixups the env stage sets for a conda-layout toolkit (stages/fixups.compute), as
    facts give them: values are the Pixi env's (``translate`` maps the names)."""
    from vllm_matrix.stages.env.fixups import torch_arch_list, torch_links_nvtoolsext

    why = "from facts (no run of this cell recorded its fixups)"
    names = ["CUDA_HOME", "CUDA_PATH", "CUDAToolkit_ROOT", "CUDACXX", "VLLM_PYTHON_EXECUTABLE"]
    out = [{"name": n, "value": "", "reason": why} for n in names]
    out.append({"name": "TORCH_CUDA_ARCH_LIST", "value": torch_arch_list(cell.arch), "reason": why})
    # torch < 2.8's CMake links CUDA::nvToolsExt, and CUDA >= 12.9 ships no libnvToolsExt:
    # conda-forge's cuda-nvtx-dev has both under targets/x86_64-linux (fixups.compute's rule)
    mm = tuple(int(x) for x in cell.cuda.split(".")[:2])
    if mm < (12, 9) or torch_links_nvtoolsext(cell.torch_version):
        out.append({"name": "NVTOOLSEXT_PATH", "value": "", "reason": why})
    return out


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


# ------------------------------------------------------------- build requirements

_BUILD_FILES = ("requirements/build/cuda.txt", "requirements/build.txt", "requirements-build.txt")
# Not PyPI dependencies of the snippet: torch comes on its own line (the cell's build, pins
# removed as use_existing_torch does), cmake and ninja from conda-forge.
_NOT_PYPI = frozenset({"torch", "torchvision", "torchaudio", "xformers", "cmake", "ninja"})


@dataclass(frozen=True)
class BuildReq:
    name: str
    spec: str  # PEP 440 specifier, "*" for none
    where: str  # file:line in the release


def _req_lines(root: Path, rel: str, seen: set[str]) -> list[tuple[str, str]]:
    """(requirement text, file:line) of a requirements file, following ``-r`` includes."""
    path = root / rel
    if rel in seen or not path.is_file():
        return []
    seen.add(rel)
    out: list[tuple[str, str]] = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text.startswith(("-r ", "--requirement ")):
            inc = os.path.normpath((Path(rel).parent / text.split(None, 1)[1]).as_posix())
            out += _req_lines(root, inc, seen)
        elif text and not text.startswith("-"):
            out.append((text, f"{rel}:{n}"))
    return out


def build_requirements(root: Path) -> list[BuildReq]:
    """The release's build requirements: its build requirements file, else pyproject.toml's
    [build-system] requires (vLLM 0.4.x has only that)."""
    lines: list[tuple[str, str]] = []
    for rel in _BUILD_FILES:
        lines = _req_lines(root, rel, set())
        if lines:
            break
    if not lines and (root / "pyproject.toml").is_file():
        text = (root / "pyproject.toml").read_text(errors="replace")
        reqs = tomllib.loads(text).get("build-system", {}).get("requires", [])
        for r in reqs:
            n = next((i for i, ln in enumerate(text.splitlines(), 1) if str(r) in ln), 0)
            lines.append((str(r), f"pyproject.toml:{n}"))
    out: list[BuildReq] = []
    for text, where in lines:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        out.append(BuildReq(canonicalize_name(req.name), str(req.specifier) or "*", where))
    return out


# ------------------------------------------------------------------- the snippet


def _conda_torch(cell: Cell, channel: tuple[str, str]) -> tuple[str, str]:
    """The pytorch dependency from a conda channel, and the cuda-version it needs.

    Pinned only to a build the knowledge says the channel has (conda.toml
    [pytorch-build]: conda-forge's feedstock); anything else is an error naming what
    exists."""
    name, where = channel
    if name != "conda-forge":
        raise MatrixError(
            f"no knowledge of the pytorch builds of channel '{name}' ({where})",
            fix="use --torch-channel conda-forge (its builds are recorded in "
            "knowledge/data/conda.toml [pytorch-build]), or take torch from the index",
        )
    builds = conda_torch_builds()
    found = builds.get(cell.torch_version)
    if found is None:
        have = ", ".join(builds)
        raise MatrixError(
            f"no record of conda-forge's pytorch {cell.torch_version} builds (recorded: {have})",
            fix="take torch from the index (no --torch-channel), or add the release to "
            "knowledge/data/conda.toml [pytorch-build] with its source",
        )
    cudas, source = found
    want = f"{cell.torch_variant[2:-1]}.{cell.torch_variant[-1]}" if cell.torch_variant else None
    cuda = want or ".".join(cell.cuda.split(".")[:2])
    if cuda not in cudas:
        tags = ", ".join("cuda" + c.replace(".", "") for c in cudas)
        raise MatrixError(
            f"conda-forge's pytorch {cell.torch_version} has CUDA builds {tags} only "
            f"(built against cuda-version {' / '.join(cudas)}); none for CUDA {cuda}, so "
            f'cuda-version = "{cell.cuda}.*" cannot solve with it (source: {source})',
            fix=f"use a cell with cuda = {cudas[-1]!r} (CUDA {cudas[-1]} from conda-forge), "
            "or take torch from the index (no --torch-channel): "
            + ", ".join(f"torch {cell.torch_version}+cu{c.replace('.', '')}" for c in cudas),
        )
    return f'{{ version = "=={cell.torch_version}", build = "cuda{cuda.replace(".", "")}*" }}', cuda


def _q(v: str) -> str:
    return json.dumps(v)  # a TOML basic string is a JSON string for our values


def snippet(
    cell: Cell,
    used: list[dict[str, str]] | None,
    *,
    max_jobs: int | None,
    cmake_min: str | None,
    max_gcc: int | None,
    build_reqs: list[BuildReq] | None = None,
    patches: list[str] | None = None,
    channel: tuple[str, str] | None = None,
    tool_path: str = "vllm-matrix",
) -> str:
    """A pixi.toml for ``cell``. ``used``: the fixups a run recorded (None: from facts);
    ``channel``: torch from that conda channel (``torch_channel``) instead of the index;
    ``patches``: the names of the series entries the tool applies to this release;
    ``tool_path``: where the Pixi workspace finds a vllm-matrix checkout (its tasks run it).
    """
    pk = conda_packages()
    fixups = used if used is not None else planned_fixups(cell)
    cuda = ".".join(cell.cuda.split(".")[:2])
    torch_spec = None
    if channel:
        torch_spec, cuda = _conda_torch(cell, channel)
    deps: dict[str, str] = {
        "python": f"{cell.python}.*",
        "cuda-version": f"{cuda}.*",
        "cuda-nvcc": "*",
        "cuda-cudart-dev": "*",
        "cuda-driver-dev": "*",
        "cuda-nvrtc-dev": "*",
        "cmake": f">={cmake_min}" if cmake_min else "*",
        "ninja": "*",
        "gxx": f"<{max_gcc + 1}" if max_gcc else "*",  # conda: 13.2 > 13, so "<14"
    }
    if any(f["name"] == "NVTOOLSEXT_PATH" for f in fixups):
        deps["cuda-nvtx-dev"] = "*"
    missing = [n for n in deps if n != "python" and n not in pk]
    if missing:
        raise MatrixError(
            f"no conda-forge facts for {missing}", fix="add them to knowledge/data/conda.toml"
        )
    act: dict[str, str] = {}
    for f in fixups:
        v = translate(f)
        if v is not None:
            act[f["name"]] = v
    if max_jobs:
        act["MAX_JOBS"] = str(max_jobs)
    origin = "recorded by a run of the cell" if used is not None else "from facts alone"
    lines = [
        f"# pixi.toml (vllm-matrix pixi-snippet): builds vLLM {cell.vllm} for cell {cell.id}",
        f"# fixups {origin}; keys as Pixi's manifest reference documents them",
        "# (vllm-matrix knowledge/data/pixi_manifest.schema.json cites each)",
        "[workspace]",
        f"name = {_q('vllm-' + cell.vllm + '-build')}",
        'channels = ["conda-forge"]',
        "# the driver's CUDA as a virtual package (__cuda), declared per platform; a Pixi",
        '# without inline platform tables: platforms = ["linux-64"] and',
        f'# [system-requirements] cuda = "{cuda}"',
        f'platforms = [{{ platform = "linux-64", cuda = {_q(cuda)} }}]',
        "",
        "[dependencies]",
    ]
    for name, spec in deps.items():
        why = f"  # {pk[name].role}" if name in pk else ""
        lines.append(f"{name} = {_q(spec)}{why}")
    if torch_spec:
        lines.append(f"pytorch = {torch_spec}  # {pk['pytorch'].role}")
    lines += ["", "[pypi-dependencies]"]
    if not torch_spec:
        lines.append(f"torch = {_q('==' + cell.torch)}")
    for r in build_reqs or []:
        if r.name not in _NOT_PYPI:
            lines.append(f"{r.name} = {_q(r.spec)}  # {r.where}")
    lines.append(
        f"vllm-matrix = {{ path = {_q(tool_path)}, editable = true }}  "
        "# the tool the tasks run (a checkout)"
    )
    lines += ["", "[pypi-options]"]
    if not torch_spec:
        lines.append(f"index-url = {_q(index.index_url() + '/')}  # the index vllm-matrix used")
        lines += _variant_index(cell)
    lines.append("no-build-isolation = true  # vLLM builds against the env's torch")
    lines += ["", "[activation.env]"]
    lines += [f"{k} = {_q(v)}" for k, v in act.items()]
    if not max_jobs:
        lines.append(
            "# MAX_JOBS / NVCC_THREADS: sized by the build task from cores and MemAvailable "
            "(4 GiB per nvcc job)"
        )
    arch = ",".join(cell.arch)
    run = f"python -m vllm_matrix run --env current --vllm {cell.vllm} --arch {arch}"
    steps = ", ".join(patches or []) or "none for this release"
    lines += [
        "",
        "[tasks]",
        f"preflight = {{ cmd = {_q(run + ' --depth preflight')}, "
        f"description = {_q('every rule for this env, no compile')} }}",
        f"build-vllm = {{ cmd = {_q(run + ' --depth build')}, description = "
        + _q(
            f"vllm-matrix's steps for vLLM {cell.vllm}: sdist (sha256-checked), patches "
            f"({steps}), torch pins removed (use_existing_torch), TORCH_CUDA_ARCH_LIST, "
            "MAX_JOBS by memory, pip wheel --no-build-isolation"
        )
        + " }",
    ]
    return "\n".join(lines) + "\n"


def _variant_index(cell: Cell) -> list[str]:
    """A torch variant (2.7.1+cu128) comes from its own per-CUDA index, as configured; a
    placeholder naming the setting where none is."""
    if not cell.torch_variant:
        return []
    var = TORCH_INDEX_ENV.format(cell.torch_variant.upper())
    found = cell.torch_index_url()
    if found is None:
        return [
            f"extra-index-urls = [{_q('<' + var + '>')}]  # unset: PyTorch's "
            f"{cell.torch_variant} index URL ({var} or matrix.toml [torch-index])"
        ]
    url, where = found
    return [f"extra-index-urls = [{_q(url + '/')}]  # torch {cell.torch}: {where}"]


def parse(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def run(args: argparse.Namespace) -> int:
    """`pixi-snippet`: the pixi.toml for a release (as `release` makes its cell) or a cell."""
    if (args.version is None) == (args.cell is None):
        raise MatrixError(
            "name the cell to build: a release with its toolchain, or a matrix cell",
            fix='pixi-snippet 0.9.2 --torch 2.7.0+cu128 --cuda 12.8 --gpu "RTX 5090"  '
            "or  pixi-snippet --cell ID",
        )
    if args.version is not None:  # any release, as `release` makes its cell: no matrix needed
        cell = release_cell(args)
        ws = Workspace(Path(args.matrix).resolve().parent)
    else:
        m, ws = load_matrix(args)
        cell = one_cell(m, args.cell)
    note = target_opts.advice_note(cell, ws.root)  # the one advice, as every command gives it
    if note:
        say(f"note: {note}")
    used = used_fixups(ws.results, cell)
    tree = source_stage.get_tree(cell.source_spec)
    f = facts_stage.read_facts(tree.root, tree.version)
    nv = toolchains.load().nvcc_for(cell.cuda)
    series = patch_series.select(patch_series.load_series(), tree.version)
    text = snippet(
        cell,
        used,
        max_jobs=cell.options.max_jobs,
        cmake_min=f.cmake,
        max_gcc=nv.max_gcc if nv else None,
        build_reqs=build_requirements(tree.root),
        patches=[p.name for p in series],
        channel=torch_channel(args.torch_channel),
        tool_path=args.tool_path,
    )
    parse(text)  # never print TOML that does not parse
    print(text, end="")
    return 0
