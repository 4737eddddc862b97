"""Fixups: the environment a cell's build needs, computed from what was found.

Each Fixup records its value and why it is needed, so results, `inv doctor` and the
Pixi snippet show exactly what was set. Nothing here is hard-coded per cell: every
value comes from the toolkit, the torch env and the cell's arches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.cache import cache_root, locked, staging_dir
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.toolkit import Toolkit

PREPEND = ("PATH",)


@dataclass(frozen=True)
class Fixup:
    name: str  # an environment variable, or "link:<path>" for a created file
    value: str
    reason: str


@dataclass(frozen=True)
class Problem:
    message: str
    fix: str


@dataclass(frozen=True)
class Fixups:
    items: tuple[Fixup, ...]
    problems: tuple[Problem, ...]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) with the fixups applied; PATH-like ones prepend."""
        out = dict(os.environ if base is None else base)
        for f in self.items:
            if f.name.startswith("link:"):
                continue
            if f.name in PREPEND and out.get(f.name):
                out[f.name] = f"{f.value}{os.pathsep}{out[f.name]}"
            else:
                out[f.name] = f.value
        return out

    def vars(self) -> dict[str, str]:
        return {f.name: f.value for f in self.items if not f.name.startswith("link:")}

    def cmake_args(self) -> list[str]:
        """For configuring CMake directly (vLLM's setup.py passes none of ours through)."""
        v = self.vars()
        args = []
        if "CUDACXX" in v:
            args.append(f"-DCMAKE_CUDA_COMPILER={v['CUDACXX']}")
        if "VLLM_PYTHON_EXECUTABLE" in v:
            args.append(f"-DVLLM_PYTHON_EXECUTABLE={v['VLLM_PYTHON_EXECUTABLE']}")
        return args

    def to_json(self) -> dict[str, object]:
        return {
            "set": [vars_of(f) for f in self.items],
            "problems": [{"message": p.message, "fix": p.fix} for p in self.problems],
        }


def vars_of(f: Fixup) -> dict[str, str]:
    return {"name": f.name, "value": f.value, "reason": f.reason}


def torch_arch_list(archs: tuple[str, ...]) -> str:
    """The cell's arches as TORCH_CUDA_ARCH_LIST ('9.0a;12.0': see ``Arch.torch_name``)."""
    return ";".join(dict.fromkeys(Arch.parse(a).torch_name for a in archs))


def _has(root: Path, *names: str) -> bool:
    return any((root / n).exists() for n in names)


def _nvtx_home(env: TorchEnv, work: Path) -> Path | None:
    """A dir with include/nvToolsExt.h and an unversioned lib/libnvToolsExt.so taken from
    the env's pip ``nvidia-nvtx`` package, or None if the env has none."""
    pkg = env.site / "nvidia" / "nvtx"
    lib = next(iter(sorted((pkg / "lib").glob("libnvToolsExt.so*"))), None)
    if not (pkg / "include" / "nvToolsExt.h").exists() or lib is None:
        return None
    final = work / "nvtx-home"
    with locked(final):
        if not (final / "lib" / "libnvToolsExt.so").exists():
            with staging_dir(final) as tmp:
                (tmp / "lib").mkdir()
                (tmp / "include").symlink_to(pkg / "include")
                (tmp / "lib" / "libnvToolsExt.so").symlink_to(lib)
    return final


def torch_links_nvtoolsext(torch_version: str) -> bool:
    """torch < 2.8's CMake config links CUDA::nvToolsExt (no nvtx3 lookup in the toolkit)."""
    try:
        return Version(torch_version).release[:2] < (2, 8)
    except InvalidVersion:
        return False


def compute(tk: Toolkit, env: TorchEnv, archs: tuple[str, ...], work: Path | None = None) -> Fixups:
    """The fixups for building against ``env``'s torch with ``tk``; ``work`` holds links
    (default: the cache, per env, so cells sharing an env share them)."""
    work = work or cache_root() / "fixups" / env.root.name
    items: list[Fixup] = []
    problems: list[Problem] = []
    add = items.append
    root = str(tk.root)
    add(
        Fixup(
            "CUDA_HOME",
            root,
            "vLLM's setup.py reads torch.utils.cpp_extension.CUDA_HOME, "
            "which comes from CUDA_HOME (else the first nvcc on PATH)",
        )
    )
    add(Fixup("CUDA_PATH", root, "CMake's FindCUDAToolkit searches ENV CUDA_PATH for libraries"))
    add(Fixup("CUDAToolkit_ROOT", root, "FindCUDAToolkit (CMake's and torch's copy) starts here"))
    add(
        Fixup(
            "CUDACXX",
            str(tk.nvcc),
            "CMake takes its CUDA compiler from CUDACXX; otherwise "
            "the first nvcc on PATH, possibly another toolkit's",
        )
    )
    add(
        Fixup(
            "PATH",
            f"{tk.root / 'bin'}{os.pathsep}{env.python_exe.parent}",
            "the toolkit's nvcc/ptxas/fatbinary and the env's cmake, ninja and python first",
        )
    )
    add(
        Fixup(
            "VLLM_PYTHON_EXECUTABLE",
            str(env.python_exe),
            "vLLM's CMake needs it to find Python and torch; setup.py sets it, a re-run "
            "of cmake outside setup.py does not (vllm PR #17830)",
        )
    )
    add(
        Fixup(
            "TORCH_CUDA_ARCH_LIST",
            torch_arch_list(archs),
            "the cell's arches; without it torch's CMake autodetects from a GPU "
            "(none here) or falls back to all arches",
        )
    )

    # nvToolsExt: torch's CMake (2.x, bundled FindCUDAToolkit) looks for nvToolsExt.h and
    # libnvToolsExt.so under the toolkit and ENV NVTOOLSEXT_PATH; when neither has them,
    # torch::nvtoolsext links a missing CUDA::nvToolsExt and configure fails.
    # CUDA >= 12.9 has no libnvToolsExt (header-only nvtx3): torch >= 2.8 finds nvtx3 in the
    # toolkit's include dir, but torch <= 2.7's config still links CUDA::nvToolsExt
    # (vLLM #20892, pytorch #155196), so the same NVTOOLSEXT_PATH rescue applies.
    major_minor = tuple(int(x) for x in tk.version.split(".")[:2])
    if major_minor < (12, 9) or torch_links_nvtoolsext(env.torch_version):
        inc_ok = _has(tk.root / "include", "nvToolsExt.h")
        lib_ok = _has(tk.root / "lib64", "libnvToolsExt.so")
        if not (inc_ok and lib_ok):
            missing = "nvToolsExt.h" if not inc_ok else "libnvToolsExt.so"
            home = _nvtx_home(env, work)
            if home is not None:
                add(
                    Fixup(
                        "NVTOOLSEXT_PATH",
                        str(home),
                        f"the toolkit lacks {missing}; torch's FindCUDAToolkit also searches "
                        "NVTOOLSEXT_PATH/include and /lib, "
                        "and this dir gives it the env's nvidia-nvtx headers with the "
                        "unversioned libnvToolsExt.so link it needs (the pip package has "
                        "only libnvToolsExt.so.1)",
                    )
                )
                add(
                    Fixup(
                        f"link:{home / 'lib' / 'libnvToolsExt.so'}",
                        str((home / "lib" / "libnvToolsExt.so").resolve()),
                        "unversioned name for CMake's find_library",
                    )
                )
            else:
                problems.append(
                    Problem(
                        "nvToolsExt is missing from the toolkit and from the env: torch's CMake "
                        'will fail with \'The link interface of target "torch::nvtoolsext" '
                        "contains: CUDA::nvToolsExt but the target was not found'",
                        f"install nvidia-nvtx-cu{major_minor[0]} into the env (pip) or "
                        "cuda-nvtx-dev into the conda env",
                    )
                )
    return Fixups(tuple(items), tuple(problems))
