"""provide(): the provider named by a cell; current_toolkit(): the active env's."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from vllm_matrix.infra import proc
from vllm_matrix.infra.cache import cache_root
from vllm_matrix.infra.errors import ConfigError, NotAvailable
from vllm_matrix.infra.tomlfile import did_you_mean
from vllm_matrix.stages.toolkit import base, conda, debian, pypi, system
from vllm_matrix.stages.toolkit.base import Toolkit

PROVIDERS = ("debian", "pypi", "system", "conda-prefix")

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")


def provide(
    provider: str,
    version: str,
    *,
    cache: Path | None = None,
    log: Path | None = None,
    path: Path | None = None,
) -> Toolkit:
    """A CUDA toolkit ``version`` ("12.4") from ``provider``, assembled once and cached.

    ``path`` names the install for ``system`` and the env for ``conda-prefix``.
    Raises NotAvailable when this machine cannot have it (the cell is SKIPPED),
    ConfigError for an unknown provider or a malformed version.
    """
    if provider not in PROVIDERS:
        raise ConfigError(
            f"unknown CUDA toolkit provider '{provider}'",
            fix=f"{did_you_mean(provider, PROVIDERS)} (providers: {', '.join(PROVIDERS)})",
        )
    version = _check_version(version)
    if path is not None and provider not in ("system", "conda-prefix"):
        raise ConfigError(
            f"a path is given for the {provider} provider, which assembles its own toolkit",
            fix='give a path only with provider "system" or "conda-prefix"',
        )
    root = cache or cache_root()
    if provider == "debian":
        return debian.provide(version, root, log)
    if provider == "pypi":
        return pypi.provide(version, root, log)
    if provider == "system":
        return system.provide(version, path, log)
    return conda.provide(version, root, path, log)


def _check_version(version: str) -> str:
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise ConfigError(
            f"CUDA version '{version}' is not major.minor",
            fix='write the toolkit version as major.minor, e.g. cuda = "12.4"',
        )
    return f"{int(m.group(1))}.{int(m.group(2))}"


def current_toolkit() -> Toolkit:
    """The toolkit of the active env: CONDA_PREFIX's nvcc, else CUDA_HOME, else PATH's."""
    prefix = os.environ.get("CONDA_PREFIX")
    candidates: list[tuple[str, Path]] = []
    if prefix and (Path(prefix) / "bin" / "nvcc").exists():
        candidates.append(("conda-prefix", Path(prefix)))
    if os.environ.get("CUDA_HOME"):
        candidates.append(("system", Path(os.environ["CUDA_HOME"])))
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(("system", Path(nvcc).resolve().parent.parent))
    for provider, path in candidates:
        ver = base.parse_nvcc_version(proc.output_of([path / "bin" / "nvcc", "--version"]) or "")[0]
        return provide(provider, ver, path=path)
    raise NotAvailable(
        "no CUDA toolkit in the current environment (no CONDA_PREFIX/bin/nvcc, "
        "CUDA_HOME or nvcc on PATH)",
        fix="install cuda-nvcc into the env, or set CUDA_HOME",
    )
