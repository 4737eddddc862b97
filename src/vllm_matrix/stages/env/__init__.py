"""Python + torch environments per (Python, torch, variant), shared by cells.

Variants (what a stage needs, measured in the integration tests):
- ``headers``: ``torch==X --no-deps`` + cmake/ninja from PyPI. torch's headers and
  CMake package are all an nvcc probe or a ``find_package(Torch)`` configure needs;
  ``import torch`` fails (no CUDA runtime wheels), which these stages never do.
- ``full``: torch with its nvidia-* dependencies + vLLM's build requirements: what
  vLLM's setup.py needs (it imports torch).

Venvs are not relocatable, so one is built in place under a lock and marked complete
last; a directory without the marker is a leftover of an interrupted run and is rebuilt.

The package also holds ``fixups`` (the environment a build needs, computed from the toolkit
and the env: the env stage makes both) and ``envprefix`` (a Pixi/conda prefix or a venv read
from its files, for ``--env PATH``). May import: sources, knowledge, infra, and other stages'
public names (toolkit).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from vllm_matrix.infra import index, manifest, proc, programs, progress
from vllm_matrix.infra.cache import (
    atomic_write_text,
    cache_root,
    locked,
    remove_tree,
    require_free,
)
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import (
    CommandError,
    ConfigError,
    MatrixError,
    NotAvailable,
    ToolError,
)
from vllm_matrix.infra.tomlfile import did_you_mean
from vllm_matrix.knowledge import buildenv, toolchains
from vllm_matrix.sources.torchwheel import no_index, read_version_py

VARIANTS = ("headers", "full")
# Free disk a cold env needs (measured: a headers env of torch 2.6-2.11 is 1.2-1.6 GiB, a
# full one with its CUDA libraries 5-7 GiB; uv's own cache holds the wheels again).
NEED_GIB = {"headers": 3.0, "full": 12.0}
MARKER = ".vllm-matrix-env.json"


@dataclass(frozen=True)
class TorchEnv:
    python: str
    torch: str
    variant: str
    root: Path
    python_exe: Path
    site: Path
    torch_version: str  # the installed version, e.g. "2.6.0+cu124"
    torch_cuda: str | None

    @property
    def torch_dir(self) -> Path:
        return self.site / "torch"

    @property
    def torch_cmake_prefix(self) -> Path:
        return self.torch_dir / "share" / "cmake"

    def to_json(self) -> dict[str, object]:
        return {
            "python": self.python,
            "torch": self.torch,
            "variant": self.variant,
            "root": str(self.root),
            "python_exe": str(self.python_exe),
            "site": str(self.site),
            "torch_version": self.torch_version,
            "torch_cuda": self.torch_cuda,
        }


def find_python(version: str) -> Path:
    """An interpreter for ``version`` (e.g. "3.12"): pyenv's, then PATH, then uv's."""
    cands: list[Path] = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        cands += sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)
    which = programs.find(f"python{version}")
    if which:
        cands.append(Path(which))
    for c in cands:
        if _python_version(c) == version:
            return c
    found = proc.output_of([*programs.uv(), "python", "find", "--no-python-downloads", version])
    if found and _python_version(Path(found.strip())) == version:
        return Path(found.strip())
    raise NotAvailable(
        f"no Python {version} interpreter on this machine",
        fix=f"install it (e.g. `pyenv install {version}` or `uv python install {version}`) "
        "or pick a cell python that is installed",
    )


def _python_version(exe: Path) -> str | None:
    out = proc.output_of([exe, "-c", "import sys;print('%d.%d' % sys.version_info[:2])"])
    return out.strip() if out is not None else None


def uv_environment() -> dict[str, str] | None:
    """What uv needs beside the environment: it reads neither pip's configuration nor, by
    default, the system's CA store, so pip's CA bundle (a proxy's, a private index's) is
    handed on as SSL_CERT_FILE unless that is set already."""
    cert = index.pip_cert()
    return {"SSL_CERT_FILE": cert} if cert and not os.environ.get("SSL_CERT_FILE") else None


def env_dir(python: str, torch: str, variant: str, root: Path | None = None) -> Path:
    # "2.7.1+cu128" -> "torch2.7.1cu128": the same tag as cell ids (bare versions unchanged)
    tag = torch.replace("+", "")
    return (root or cache_root()) / "envs" / f"py{python}-torch{tag}-{variant}"


def _read_marker(path: Path) -> TorchEnv | None:
    m = path / MARKER
    if not m.is_file():
        return None
    try:
        d = json.loads(m.read_text())
    except (OSError, ValueError):  # a damaged marker: the env is made again
        return None
    env = TorchEnv(
        d["python"],
        d["torch"],
        d["variant"],
        Path(d["root"]),
        Path(d["python_exe"]),
        Path(d["site"]),
        d["torch_version"],
        d["torch_cuda"],
    )
    if env.root != path:  # the cache was moved or copied: the env here is checked and used
        try:
            site = path / env.site.relative_to(env.root)
            exe = path / env.python_exe.relative_to(env.root)
        except ValueError:
            return None
        env = replace(env, root=path, site=site, python_exe=exe)
    return env


def provide(
    python: str,
    torch: str,
    variant: str = "headers",
    *,
    cache: Path | None = None,
    log: Path | None = None,
    torch_index: str | None = None,
) -> TorchEnv:
    """A venv with ``torch`` ('2.6.0', or a variant '2.7.1+cu128' from ``torch_index``,
    the variant's own index: torch comes from there, everything else from pip's index)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown env variant '{variant}'", fix=did_you_mean(variant, VARIANTS))
    path = env_dir(python, torch, variant, cache)
    env = _read_marker(path)
    if env is not None and not damage(env):
        return env
    interpreter = find_python(python)
    with locked(path):
        env = _read_marker(path)
        damaged = damage(env) if env is not None else []
        if env is not None and not damaged:
            return env
        if damaged:
            try:
                return _remake(path, interpreter, python, torch, variant, log, torch_index)
            except MatrixError as exc:
                raise ToolError(
                    manifest.describe(f"the cached env {path.name}", damaged)
                    + f"; remaking it failed: {exc.message}",
                    fix=exc.fix or "rerun once the cause above is fixed",
                ) from exc
        return _remake(path, interpreter, python, torch, variant, log, torch_index)


def _remake(
    path: Path,
    interpreter: Path,
    python: str,
    torch: str,
    variant: str,
    log: Path | None,
    torch_index: str | None,
) -> TorchEnv:
    """Build the env at ``path`` (the caller holds its lock): the manifest, then the marker."""
    if path.exists():  # an interrupted earlier build: never reuse half an env
        remove_tree(path)  # renamed aside first: a killed run's orphan may still write
    require_free(path, NEED_GIB[variant], f"the torch {torch} env ({variant})")
    # uv reports nothing countable: the env's size grows as it installs.
    what = f"installing torch {torch}" + (" and its CUDA libraries" if variant == "full" else "")
    bar = progress.watch_dir(f"creating env py{python} ({variant})", path, item=what)
    try:
        env = _build(path, interpreter, python, torch, variant, log, torch_index)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        bar.close()
    manifest.write(path, key_files(env), ignore=(MARKER,))
    atomic_write_text(path / MARKER, json.dumps(env.to_json(), indent=1))
    return env


# Hashed on every use (relative to site-packages): what a probe or a build reads first.
KEY_FILES = (
    "torch/include/torch/extension.h",
    "torch/include/ATen/ATen.h",
    "torch/lib/libtorch.so",
    "torch/lib/libc10.so",
    "torch/version.py",
    "torch/share/cmake/Torch/TorchConfig.cmake",
)


def key_files(env: TorchEnv) -> list[str]:
    try:
        site = env.site.relative_to(env.root).as_posix()
    except ValueError:
        return []
    return [f"{site}/{k}" for k in KEY_FILES]


def damage(env: TorchEnv, full: bool = False) -> list[str]:
    """What is wrong with the cached env against its manifest (empty: intact).

    An env made before manifests existed is checked against its packages' own RECORD
    files instead (every installed file there, with its size; the key files' sha256), and
    then given a manifest (adopted, not remade: remaking costs GBs of downloads, and
    RECORD is the installer's own list of what it wrote). Not written where the cache is
    read-only."""
    root = env.root
    m = manifest.read(root)
    if m is not None:
        return manifest.problems(root, m, full)
    found = record_problems(env.site, set(KEY_FILES) if not full else None)
    if not (env.site / "torch").is_dir():
        found.insert(0, "no torch in the env's site-packages")
    if not found:
        with contextlib.suppress(OSError):
            manifest.write(root, key_files(env), ignore=(MARKER,))
    return found


def record_problems(site: Path, hashed: set[str] | None) -> list[str]:
    """The files every ``*.dist-info/RECORD`` under ``site`` lists that are missing or of
    another size; the sha256 of those in ``hashed`` (None: every file) that differs."""
    out: list[str] = []
    for rec in sorted(site.glob("*.dist-info/RECORD")):
        for row in csv.reader(rec.read_text(encoding="utf-8", errors="replace").splitlines()):
            if len(row) < 3 or not row[1] or not row[2].isdigit():
                continue  # RECORD itself, .pyc written later: no hash recorded
            rel, digest, size = row[0], row[1], int(row[2])
            p = site / rel
            if "__pycache__" in p.parts:
                continue
            try:
                got = p.stat().st_size
            except OSError:
                out.append(f"{rel} is missing (listed in {rec.parent.name}/RECORD)")
                continue
            if got != size:
                out.append(f"{rel} changed size ({size} -> {got} bytes)")
            elif (hashed is None or rel in hashed) and digest.startswith("sha256="):
                raw = hashlib.sha256(p.read_bytes()).digest()
                if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != digest[7:]:
                    out.append(f"{rel} changed content (sha256 differs from RECORD)")
    return out


def nvtx_requirement(site: Path) -> str | None:
    """torch's own nvidia-nvtx pin ('nvidia-nvtx-cu12==12.8.55') when this torch's CMake
    config links CUDA::nvToolsExt (torch < 2.8), else None."""
    metas = sorted(site.glob("torch-*.dist-info/METADATA"))
    if not metas:
        return None
    text = metas[0].read_text(errors="replace")
    m = re.search(r"^Version: (\d+)\.(\d+)", text, re.M)
    if not m or (int(m.group(1)), int(m.group(2))) >= (2, 8):
        return None
    for line in re.findall(r"^Requires-Dist: (nvidia-nvtx.*)$", text, re.M):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        return f"{req.name}{req.specifier}"
    return None


def _build(
    path: Path,
    interpreter: Path,
    python: str,
    torch: str,
    variant: str,
    log: Path | None,
    torch_index: str | None = None,
) -> TorchEnv:
    uv = programs.uv()
    proc.run([*uv, "venv", "--quiet", "--python", interpreter, path], log=log)
    exe = path / "bin" / "python"
    pkgs = [f"torch=={torch}"]
    # The index pip is configured for, passed explicitly: uv has its own defaults.
    uv_env = uv_environment()
    base: list[str | os.PathLike[str]] = [
        *uv,
        "pip",
        "install",
        "--python",
        exe,
        "--index-url",
        index.index_url(),
    ]
    if torch_index:
        # uv looks in --extra-index-url first: the variant's torch comes from its index.
        base += ["--extra-index-url", torch_index]

    def install(*args: str | os.PathLike[str], timeout: float = 3600) -> None:
        try:
            proc.run([*base, *args], log=log, env=uv_env, timeout=timeout)
        except CommandError as exc:
            raise uv_error(torch, exc) from None

    if variant == "headers":
        install("--no-deps", *pkgs)
        install(*buildenv.packages("headers"), timeout=1800)
    else:
        install(*pkgs, *buildenv.packages("full"))
    site = Path(
        proc.run([exe, "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"], log=log)
        .output.strip()
        .splitlines()[-1]
    )
    if variant == "headers":
        nvtx = nvtx_requirement(site)
        if nvtx:
            # torch < 2.8's CMake links CUDA::nvToolsExt; toolkits >= 12.9 lack it and the
            # nvtx fixup takes it from this wheel (torch's own pinned dependency).
            install("--no-deps", nvtx, timeout=1800)
    full, cuda = read_version_py((site / "torch" / "version.py").read_text())
    return TorchEnv(
        python,
        torch,
        variant,
        path,
        exe,
        site,
        full or torch,
        cuda,
    )


def uv_error(torch: str, exc: CommandError) -> MatrixError:
    """``uv pip install`` failed: its own reason (the last lines that say why) and a fix
    that points at the cause -- a torch the index does not have, or the index itself."""
    lines = [ln.strip() for ln in exc.tail.splitlines() if ln.strip() and not ln.startswith("$")]
    why = " ".join(lines[-3:])[-400:] or exc.message
    low = why.lower()
    if "no version of torch" in low or "no solution found" in low or "not found in the" in low:
        return MatrixError(
            f"uv cannot install torch {torch}: {why}",
            fix=f"check that torch {torch} exists for this Python on the index "
            "(`pip index versions torch`); pick a released version",
        )
    return ToolError(
        f"uv could not create the torch {torch} env: {why}",
        fix="check the network and pip's index-url (`pip config list`); the log has uv's output",
    )


def current_env() -> TorchEnv:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        raise MatrixError(
            f"torch is not installed in the current environment ({sys.prefix})",
            fix="install torch into the env (pip / pixi add)",
        )
    tdir = Path(spec.origin).parent
    found, cuda = read_version_py((tdir / "version.py").read_text())
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    full = found or "unknown"
    return TorchEnv(
        py,
        full.split("+")[0],
        "current",
        Path(sys.prefix),
        Path(sys.executable),
        tdir.parent,
        full,
        cuda,
    )


def torch_source(cell: Cell) -> tuple[str, str | None]:
    """(what to install, the variant index to take it from) for the cell's torch.

    A bare version comes from pip's index. A variant comes from its configured index; with
    none configured, it is the index's default wheel when that wheel is that variant
    (PyPI's 2.6.0 is +cu124), else it cannot be had here: NotAvailable (SKIPPED).
    """
    variant = cell.torch_variant
    if variant is None:
        return cell.torch, None
    found = cell.torch_index_url()
    if found is None:
        default = toolchains.load().torch.get(cell.torch_version)
        if default is not None and default.local == variant:
            return cell.torch_version, None
        raise no_index(variant)
    url, where = found
    try:
        have = {str(f.version) for f in index.project_files("torch", url)}
    except MatrixError as exc:
        raise NotAvailable(
            f"torch {cell.torch}: the {variant} index configured by {where} cannot be read: "
            f"{exc.message}",
            fix=f"check {where} and the network; preflight's verdict still stands",
        ) from exc
    if cell.torch not in have:
        raise NotAvailable(
            f"torch {cell.torch} is not on the {variant} index configured by {where}",
            fix=f"pick a torch release that index serves, or fix {where}",
        )
    return cell.torch, url
