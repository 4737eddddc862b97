"""The toolkit record, what nvcc and its headers say, the relocatable nvcc.profile,
and the race-free cache every assembling provider builds into.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vllm_matrix.infra import manifest, proc
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.cache import (
    atomic_write_text,
    locked,
    remove_tree,
    require_free,
    staging_dir,
)
from vllm_matrix.infra.errors import MatrixError, NotAvailable, ToolError

MARKER = ".vllm-matrix-toolkit.json"
# Bump when the assembled layout changes: older cached roots are then rebuilt.
ASSEMBLY_FORMAT = 3  # 3: PyPI toolkits carry the math libraries torch needs


@dataclass(frozen=True)
class Toolkit:
    provider: str  # "debian" | "pypi" | "system" | "conda-prefix"
    version: str  # "12.4" (major.minor, from nvcc --version)
    full_version: str  # "12.4.131"
    root: Path  # CUDA root, standard layout
    nvcc: Path
    archs: tuple[str, ...]  # from --list-gpu-arch, as "5.0", "9.0", "12.0" ...
    max_gcc: int | None  # from include/crt/host_config.h
    notes: tuple[str, ...]  # what was assembled/fixed and why

    def to_json(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "version": self.version,
            "full_version": self.full_version,
            "root": str(self.root),
            "nvcc": str(self.nvcc),
            "archs": list(self.archs),
            "max_gcc": self.max_gcc,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Toolkit:
        max_gcc = data["max_gcc"]
        return cls(
            provider=str(data["provider"]),
            version=str(data["version"]),
            full_version=str(data["full_version"]),
            root=Path(str(data["root"])),
            nvcc=Path(str(data["nvcc"])),
            archs=tuple(str(a) for a in _as_list(data["archs"])),
            max_gcc=int(str(max_gcc)) if max_gcc is not None else None,
            notes=tuple(str(n) for n in _as_list(data["notes"])),
        )


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {value!r}")
    return value


# --------------------------------------------------------------------------- parsing


def parse_nvcc_version(text: str) -> tuple[str, str]:
    """(major.minor, full) from ``nvcc --version``: "release 12.4, V12.4.131"."""
    m = re.search(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)", text)
    if not m:
        raise MatrixError(
            "cannot read the CUDA version from nvcc --version",
            fix=f"check that this nvcc runs; it printed: {text.strip()[-200:]!r}",
        )
    return m.group(1), m.group(2)


def nvcc_arch_list(text: str) -> tuple[str, ...]:
    """``nvcc --list-gpu-arch`` (compute_75 ... compute_121) as ("7.5", ..., "12.1"), sorted;
    plain arches only (no a/f variants: nvcc lists none)."""
    found = {Arch.parse(f"compute_{n}") for n in re.findall(r"\bcompute_(\d+)\b", text)}
    return tuple(a.name for a in sorted(found))


def parse_max_gcc(text: str) -> int | None:
    """The newest host gcc major that crt/host_config.h lets through (``__GNUC__ > N``)."""
    m = re.search(r"^\s*#\s*if\s+__GNUC__\s*>\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def host_config(root: Path) -> Path | None:
    for inc in (root / "include", *sorted(root.glob("targets/*/include"))):
        candidate = inc / "crt" / "host_config.h"
        if candidate.is_file():
            return candidate
    return None


def inspect_root(
    root: Path,
    provider: str,
    notes: Sequence[str] = (),
    *,
    log: Path | None = None,
    final_root: Path | None = None,
) -> Toolkit:
    """Ask the nvcc under ``root`` for its version and archs; read its gcc limit.

    ``final_root`` is where ``root`` will live (an assembled toolkit is inspected in
    its staging dir, which also proves its nvcc.profile is relocatable).
    """
    nvcc = root / "bin" / "nvcc"
    if not nvcc.exists():
        raise NotAvailable(
            f"no nvcc at {nvcc}", fix="point the provider at a CUDA root with bin/nvcc"
        )
    version, full = parse_nvcc_version(proc.run([nvcc, "--version"], log=log).output)
    archs = nvcc_arch_list(proc.run([nvcc, "--list-gpu-arch"], log=log).output)
    hc = host_config(root)
    max_gcc = parse_max_gcc(hc.read_text(errors="replace")) if hc else None
    where = final_root or root
    return Toolkit(
        provider=provider,
        version=version,
        full_version=full,
        root=where,
        nvcc=where / "bin" / "nvcc",
        archs=archs,
        max_gcc=max_gcc,
        notes=tuple(notes),
    )


def layout_problems(root: Path) -> list[str]:
    """What a standard-layout CUDA root lacks (empty when complete)."""
    problems = []
    for rel in (
        "bin/nvcc",
        "bin/nvcc.profile",
        "nvvm/bin/cicc",
        "nvvm/libdevice",
        "include/cuda_runtime.h",
        "include/crt/host_config.h",
        "include/nv/target",
    ):
        if not (root / rel).exists():
            problems.append(f"missing {rel}")
    lib = root / "lib64"
    if not ((lib / "libcudart.so").exists() or (lib / "libcudart_static.a").exists()):
        problems.append("missing lib64/libcudart.so and lib64/libcudart_static.a")
    return problems


# --------------------------------------------------------------------------- profile

PROFILE_TEMPLATE = """\
# Written by vllm-matrix: relocatable, every path is relative to $(_HERE_),
# the directory nvcc was started from.

TOP              = $(_HERE_)/..

CICC_PATH        = $(TOP)/nvvm/bin
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice

LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(CICC_PATH):$(_HERE_):

INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
{system_includes}
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"

CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
"""


def profile_text(*, cccl_subdir: bool = False) -> str:
    """An nvcc.profile for a standard-layout root; CUDA >= 13 keeps CCCL in include/cccl."""
    extra = (
        'SYSTEM_INCLUDES +=  "-isystem" "$(TOP)/include/cccl" $(_SPACE_)\n' if cccl_subdir else ""
    )
    return PROFILE_TEMPLATE.format(system_includes=extra)


def write_profile(root: Path) -> None:
    profile = root / "bin" / "nvcc.profile"
    if profile.is_symlink() or profile.exists():
        profile.unlink()
    atomic_write_text(profile, profile_text(cccl_subdir=(root / "include" / "cccl").is_dir()))


def profile_is_relocatable(text: str) -> bool:
    """True when no setting names an absolute path (all go through $(...) variables)."""
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        if "=" in line and re.search(r'(^|[\s"=:]|-I|-L|-isystem)/', line.split("=", 1)[1]):
            return False
    return "$(_HERE_)" in text


# --------------------------------------------------------------------------- cache


def toolkits_dir(cache: Path) -> Path:
    """Where assembled toolkits live: one folder per assembly format, so two versions of
    vllm-matrix sharing a cache (a checkout and a CI job, say) never remake, and delete,
    a toolkit the other is compiling with; each assembles its own once."""
    return cache / "toolkits" / f"v{ASSEMBLY_FORMAT}"


def _cached(final: Path) -> Toolkit | None:
    """The finished toolkit at ``final``, or None when absent, partial or stale."""
    marker = final / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        if data.get("format") != ASSEMBLY_FORMAT:
            return None
        tk = Toolkit.from_json(data["toolkit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if tk.root != final:  # the cache was moved or copied: the tree here is the one checked
        tk = replace(tk, root=final, nvcc=final / "bin" / "nvcc")  # and used (relocatable)
    if not os.access(tk.nvcc, os.X_OK):
        return None
    return tk


# Hashed on every use (manifest.py): what a compile runs or reads first.
KEY_FILES = (
    "bin/nvcc",
    "bin/nvcc.profile",
    "bin/ptxas",
    "bin/fatbinary",
    "bin/cudafe++",
    "nvvm/bin/cicc",
    "include/cuda_runtime.h",
    "include/crt/host_config.h",
    "lib64/libcudart_static.a",
)


def _finish(staging: Path, tk: Toolkit) -> None:
    # The manifest first, the marker last: a marked root always has its manifest.
    manifest.write(staging, KEY_FILES, ignore=(MARKER,))
    record = {"format": ASSEMBLY_FORMAT, "toolkit": tk.to_json()}
    atomic_write_text(staging / MARKER, json.dumps(record, indent=2) + "\n")


def damage(final: Path, tk: Toolkit, full: bool = False) -> list[str]:
    """What is wrong with the cached toolkit at ``final`` against its manifest (empty: intact).

    A root assembled before manifests existed is checked once the other way -- its layout
    complete and its nvcc running and saying the recorded version -- and then given a
    manifest of what it holds now (adopted, not rebuilt: a rebuild costs a download of GBs,
    and the checks find the damage seen so far: a missing header or cicc, an nvcc that
    does not run). It is not written where the cache is read-only."""
    m = manifest.read(final)
    if m is not None:
        return manifest.problems(final, m, full)
    found = layout_problems(final)
    if not found:
        try:
            done = proc.run([final / "bin" / "nvcc", "--version"], check=False, timeout=60)
            rc, text = done.returncode, done.output
        except (OSError, MatrixError) as exc:  # "Exec format error": flipped bytes
            rc, text = -1, str(exc)
        got = re.search(r"V(\d+\.\d+\.\d+)", text) if rc == 0 else None
        if got is None or got.group(1) != tk.full_version:
            found.append(
                f"bin/nvcc --version exited with {rc}"
                + (f" and says {got.group(1)}, not {tk.full_version}" if got else "")
                + f": {text.strip()[-120:]!r}"
            )
    if not found:
        with contextlib.suppress(OSError):
            manifest.write(final, KEY_FILES, ignore=(MARKER,))
    return found


def build_cached(
    final: Path,
    build: Callable[[Path], Toolkit],
    valid: Callable[[Toolkit], bool] = lambda tk: True,
    need_gib: float = 0.0,
) -> Toolkit:
    """Return the cached toolkit at ``final`` or build it there, race-free.

    ``build(staging)`` fills the staging dir and returns the Toolkit (rooted at
    ``final``); the marker is written last, inside the staging dir, so a root
    with a marker is complete by construction. ``valid`` may reject a complete
    but outdated entry (e.g. a view whose env moved).
    """
    tk = _cached(final)
    if tk is not None and valid(tk) and not damage(final, tk):
        return tk
    with locked(final):
        tk = _cached(final)
        damaged = damage(final, tk) if tk is not None and valid(tk) else []
        if tk is not None and valid(tk) and not damaged:
            return tk
        # Anything here without a valid marker is a half-finished or stale assembly; one
        # whose files differ from its manifest is damaged: both are made again.
        if final.exists() or final.is_symlink():
            remove_tree(final)
        if need_gib:
            require_free(final, need_gib, f"the toolkit {final.name}")
        try:
            with staging_dir(final) as staging:
                tk = build(staging)
                if damaged:
                    why = manifest.describe(f"the cached toolkit {final.name}", damaged)
                    tk = replace(tk, notes=(*tk.notes, f"rebuilt: {why}"))
                _finish(staging, tk)
        except MatrixError as exc:
            if not damaged:
                raise
            raise ToolError(
                manifest.describe(f"the cached toolkit {final.name}", damaged)
                + f"; rebuilding it failed: {exc.message}",
                fix=exc.fix
                or "rerun once the cause above is fixed: the damaged toolkit was removed",
            ) from exc
        return tk
