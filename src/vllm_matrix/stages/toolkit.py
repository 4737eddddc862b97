"""CUDA toolkit providers: each yields a CUDA root in the standard layout.

Standard layout (what CMake, torch's cpp_extension and vLLM's setup.py expect of
CUDA_HOME)::

    bin/nvcc  bin/nvcc.profile (relocatable: every path from $(_HERE_))
    nvvm/bin/cicc  nvvm/libdevice/libdevice.10.bc
    include/  (cuda_runtime.h, crt/host_config.h, nv/target ...)
    lib64/    (libcudart*, stubs/)

Providers:
  debian        Debian's non-free nvidia-cuda-toolkit (.debs fetched with a private
                apt state, unpacked with dpkg -x, rearranged)
  pypi          NVIDIA's CUDA 13+ component wheels, unzipped and merged
  system        an existing install (explicit path, $CUDA_HOME, /usr/local/cuda-X.Y,
                /usr/local/cuda)
  conda-prefix  an existing conda/pixi env, seen through a symlink view

Cache layout (under cache_root(), or ``cache``):
  toolkits/<provider>-<version>/    an assembled root, renamed into place when complete;
                                    MARKER inside records the finished Toolkit
  downloads/debian/<suite>/*.deb    .debs, sha256-checked against apt's Packages index
  downloads/pypi/*.whl              wheels, sha256-checked against the package index
  apt/<suite>/                      private apt sources list, lists and cache
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vllm_matrix.infra import index, proc, programs, progress
from vllm_matrix.infra.cache import (
    atomic_write_text,
    cache_root,
    locked,
    require_free,
    sha256_file,
    staging_dir,
)
from vllm_matrix.infra.errors import (
    CommandError,
    ConfigError,
    MatrixError,
    NotAvailable,
    SourceError,
    ToolError,
)
from vllm_matrix.infra.tomlfile import did_you_mean

PROVIDERS = ("debian", "pypi", "system", "conda-prefix")
MARKER = ".vllm-matrix-toolkit.json"
# Bump when the assembled layout changes: older cached roots are then rebuilt.
ASSEMBLY_FORMAT = 3  # 3: PyPI toolkits carry the math libraries torch needs

# Debian: which release of the archive carries which toolkit (non-free component).
DEBIAN_SUITES = {"12.4": "trixie", "11.8": "bookworm"}
DEBIAN_TRIPLET = "x86_64-linux-gnu"
# From `apt-cache depends nvidia-cuda-dev`: of its dependencies only these are needed
# to compile and link. The runtime math libraries (cublas, cufft, ... several GB) are
# left out: nvidia-cuda-dev ships link stubs for them in lib/<triplet>/stubs, and at
# run time torch's own nvidia-* wheels provide them. libcu++ (nv/target), CUB and
# Thrust are libcu++-dev/libcub-dev/libthrust-dev: for 12.4 that is CCCL 2.3.2, the
# same files as PyPI's nvidia-cuda-cccl-cu12 12.4.127.post1, so no wheel is needed.
DEBIAN_DEV_DEPENDS = re.compile(
    r"libcudart\d[\d.]*|libnvtoolsext\d+|libcu\+\+-dev|libcub-dev|libthrust-dev"
)
# Static archives kept from nvidia-cuda-dev; the other *_static*.a (2.4 GiB for 12.4)
# are the math libraries' static builds, which no vLLM/torch extension build links.
DEBIAN_KEEP_ARCHIVES = frozenset(
    {"libcudart_static.a", "libcudadevrt.a", "libculibos.a", "libcufilt.a"}
)

# PyPI: the component wheels of one CUDA release (CUDA >= 13; the cu12 nvcc wheels
# carry ptxas only), each with the files that prove it is there. Which version of each
# belongs to the release is read from NVIDIA's `cuda-toolkit` metapackage of that release
# (its "all" extra pins them: cuBLAS 13.1.x and cuSPARSE 12.6.x belong to CUDA 13.0).
# The math libraries are what torch's headers include (ATen/cuda/CUDAContextLight.h:
# cusparse.h, cublas_v2.h, cublasLt.h, cusolverDn.h) and what its CMake links (CUDA::cublas,
# CUDA::cufft, CUDA::curand, CUDA::cusparse, CUDA::nvrtc, ...).
PYPI_COMPONENTS: dict[str, tuple[str, ...]] = {
    "nvidia-cuda-nvcc": ("bin/nvcc",),
    "nvidia-nvvm": ("nvvm/bin/cicc",),
    "nvidia-cuda-crt": ("include/crt/host_config.h",),
    "nvidia-cuda-runtime": ("include/cuda_runtime.h",),
    "nvidia-cuda-cccl": ("include/nv/target",),
    "nvidia-nvtx": ("include/nvtx3/nvToolsExt.h",),
    # without it torch's CMake generate fails (CUDA_nvrtc_LIBRARY NOTFOUND)
    "nvidia-cuda-nvrtc": ("include/nvrtc.h", "lib/libnvrtc.so*"),
    "nvidia-cublas": ("include/cublas_v2.h", "include/cublasLt.h", "lib/libcublas.so*"),
    "nvidia-cusparse": ("include/cusparse.h", "lib/libcusparse.so*"),
    "nvidia-cusolver": ("include/cusolverDn.h", "lib/libcusolver.so*"),
    "nvidia-curand": ("include/curand.h", "lib/libcurand.so*"),
    "nvidia-cufft": ("include/cufft.h", "lib/libcufft.so*"),
    # cuSPARSE, cuSOLVER and cuFFT link against it
    "nvidia-nvjitlink": ("lib/libnvJitLink.so*",),
}
PYPI_OPTIONAL = ("nvidia-cuda-cuobjdump",)
# Free disk a cold assembly needs (downloads + unpacked root, measured for 13.0: 1.2 GiB of
# wheels, 1.9 GiB assembled; Debian 12.4: 1.0 GiB of .debs, 0.25 GiB kept), with headroom.
PYPI_NEED_GIB = 4.0
DEBIAN_NEED_GIB = 2.0
PYPI_METAPACKAGE = "cuda-toolkit"
PYPI_MIN_MAJOR = 13

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

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")


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


# --------------------------------------------------------------------------- entry


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
        return _provide_debian(version, root, log)
    if provider == "pypi":
        return _provide_pypi(version, root, log)
    if provider == "system":
        return _provide_system(version, path, log)
    return _provide_conda(version, root, path, log)


def _check_version(version: str) -> str:
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise ConfigError(
            f"CUDA version '{version}' is not major.minor",
            fix='write the toolkit version as major.minor, e.g. cuda = "12.4"',
        )
    return f"{int(m.group(1))}.{int(m.group(2))}"


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


def parse_arch_list(text: str) -> tuple[str, ...]:
    """``nvcc --list-gpu-arch`` (compute_75 ... compute_121) as ("7.5", ..., "12.1"), sorted."""
    found = {int(n) for n in re.findall(r"\bcompute_(\d+)\b", text)}
    return tuple(f"{n // 10}.{n % 10}" for n in sorted(found))


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
    archs = parse_arch_list(proc.run([nvcc, "--list-gpu-arch"], log=log).output)
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
    if not os.access(tk.nvcc, os.X_OK):
        return None
    return tk


def _finish(staging: Path, tk: Toolkit) -> None:
    record = {"format": ASSEMBLY_FORMAT, "toolkit": tk.to_json()}
    atomic_write_text(staging / MARKER, json.dumps(record, indent=2) + "\n")


def _build_cached(
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
    if tk is not None and valid(tk):
        return tk
    with locked(final):
        tk = _cached(final)
        if tk is not None and valid(tk):
            return tk
        # Anything here without a valid marker is a half-finished or stale assembly.
        if final.exists() or final.is_symlink():
            shutil.rmtree(final, ignore_errors=True)
        if need_gib:
            require_free(final, need_gib, f"the toolkit {final.name}")
        with staging_dir(final) as staging:
            tk = build(staging)
            _finish(staging, tk)
        return tk


# --------------------------------------------------------------------------- files


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and dst.is_dir() and not dst.is_symlink() and src.is_dir():
        for child in src.iterdir():
            _move(child, dst / child.name)
        src.rmdir()
    else:
        os.replace(src, dst)


def unzip_wheel(wheel: Path, dest: Path) -> None:
    """Unpack a wheel keeping the executable bits (zipfile alone drops them)."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                raise SourceError(
                    f"{wheel.name}: member {info.filename} escapes the target dir",
                    fix="delete the wheel from the cache's downloads dir and retry",
                )
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode | stat.S_IRUSR | stat.S_IWUSR)


def add_dev_symlinks(lib: Path) -> list[str]:
    """libX.so -> libX.so.N where only the versioned file exists (wheels carry no links)."""
    added = []
    for f in sorted(lib.glob("lib*.so.*")):
        m = re.match(r"^(lib.+\.so)\.\d+$", f.name)
        if m and not (lib / m.group(1)).exists() and not (lib / m.group(1)).is_symlink():
            (lib / m.group(1)).symlink_to(f.name)
            added.append(f"{m.group(1)} -> {f.name}")
    return added


def remove_dangling_symlinks(root: Path) -> list[str]:
    removed = []
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            p = Path(dirpath) / name
            if p.is_symlink() and not p.exists():
                removed.append(str(p.relative_to(root)))
                p.unlink()
    return sorted(removed)


# --------------------------------------------------------------------------- debian


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    filename: str  # pool path from the Packages index
    sha256: str
    size: int

    @property
    def deb_name(self) -> str:
        return Path(self.filename).name


@dataclass(frozen=True)
class AptSource:
    uri: str
    signed_by: str | None


def parse_deb822_sources(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += "\n" + raw.strip()
            continue
        if ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _is_release_suite(suite: str) -> bool:
    # "bookworm", "trixie", "stable": the main archive (not -security/-updates/-backports).
    return bool(suite) and "-" not in suite and "/" not in suite


def debian_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Debian archive mirrors configured for apt (deb822 and one-line formats)."""
    found: list[AptSource] = []
    for f in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for st in parse_deb822_sources(f.read_text(errors="replace")):
            if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
                continue
            if not any(_is_release_suite(s) for s in st.get("suites", "").split()):
                continue
            for uri in st.get("uris", "").split():
                found.append(AptSource(uri.rstrip("/"), st.get("signed-by") or None))
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for raw in f.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if not m or not _is_release_suite(m.group(3)):
                continue
            opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
            found.append(AptSource(m.group(2).rstrip("/"), opts.get("signed-by")))
    return found


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> AptSource:
    override = os.environ.get("VLLM_MATRIX_DEBIAN_MIRROR")
    if override:
        return AptSource(override.rstrip("/"), None)
    sources = debian_sources(etc_apt)
    if not sources:
        raise NotAvailable(
            f"no Debian archive mirror found in apt's sources under {etc_apt}",
            fix="configure a Debian mirror for apt, or set VLLM_MATRIX_DEBIAN_MIRROR to its URI",
        )
    return sources[0]


def private_sources_list(source: AptSource, suite: str) -> str:
    signed = (
        f" [signed-by={source.signed_by}]"
        if source.signed_by and "\n" not in source.signed_by
        else ""
    )
    return f"deb{signed} {source.uri} {suite} main contrib non-free\n"


def apt_options(apt_dir: Path) -> list[str]:
    """apt -o options that confine apt to ``apt_dir`` (the system's state is not touched)."""
    opts = {
        "Dir::Etc::sourcelist": str(apt_dir / "sources.list"),
        "Dir::Etc::sourceparts": "/dev/null",
        "Dir::Etc::preferences": "/dev/null",
        "Dir::Etc::preferencesparts": "/dev/null",
        "Dir::State::Lists": str(apt_dir / "lists"),
        "Dir::State::status": "/dev/null",
        "Dir::Cache": str(apt_dir / "cache"),
        # apt drops to its _apt user for downloads, which cannot write into our cache.
        "APT::Sandbox::User": pwd.getpwuid(os.getuid()).pw_name,
    }
    args: list[str] = []
    for key, value in opts.items():
        args += ["-o", f"{key}={value}"]
    return args


def parse_depends(text: str) -> list[str]:
    """Real (non-virtual) package names on the Depends lines of ``apt-cache depends``."""
    return re.findall(r"^\s*\|?Depends:\s*([^\s<>]+)\s*$", text, re.M)


def debian_package_set(cuda_dev_depends: str) -> tuple[str, ...]:
    picked = [d for d in parse_depends(cuda_dev_depends) if DEBIAN_DEV_DEPENDS.fullmatch(d)]
    names = ["nvidia-cuda-toolkit", "nvidia-cuda-dev", *dict.fromkeys(picked)]
    for needed, why in (("libcudart", "libcudart.so"), ("libcu++-dev", "nv/target")):
        if not any(n.startswith(needed) for n in names):
            raise NotAvailable(
                f"nvidia-cuda-dev no longer depends on a {needed}* package ({why})",
                fix="check `apt-cache depends nvidia-cuda-dev` and update DEBIAN_DEV_DEPENDS",
            )
    return tuple(names)


def parse_apt_show(text: str) -> dict[str, DebPackage]:
    out: dict[str, DebPackage] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            m = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line)
            if m:
                fields.setdefault(m.group(1).lower(), m.group(2).strip())
        if {"package", "version", "filename", "sha256", "size"} <= fields.keys():
            pkg = DebPackage(
                fields["package"],
                fields["version"],
                fields["filename"],
                fields["sha256"],
                int(fields["size"]),
            )
            out.setdefault(pkg.name, pkg)
    return out


def _apt(
    args: list[str], apt_dir: Path, log: Path | None, cwd: Path | None = None
) -> proc.Completed:
    exe = args[0]
    return proc.run([exe, *apt_options(apt_dir), *args[1:]], log=log, cwd=cwd, env={"LC_ALL": "C"})


def _apt_update(apt_dir: Path, suite: str, log: Path | None) -> None:
    source = debian_mirror()
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    atomic_write_text(apt_dir / "sources.list", private_sources_list(source, suite))
    done = proc.run(
        ["apt-get", *apt_options(apt_dir), "update"], log=log, check=False, env={"LC_ALL": "C"}
    )
    # apt-get update exits 0 on an unreachable mirror (only warns), so look for the index.
    if done.returncode != 0 or not list(
        (apt_dir / "lists").glob(f"*_{suite}_non-free_binary-*_Packages*")
    ):
        raise ToolError(
            f"cannot read the Debian {suite} non-free package index from {source.uri}: "
            + done.output.strip()[-400:],
            fix="check the network / apt's mirror, or use provider pypi (CUDA 13) or system",
        )


def _fetch_debs(
    packages: Sequence[DebPackage], apt_dir: Path, downloads: Path, log: Path | None
) -> list[Path]:
    """The .debs in ``downloads``, each checked against the Packages index's sha256.

    apt-get download verifies the hashes itself; we check again because a file
    already in the cache may be a leftover of an interrupted or corrupted run.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    wanted = []
    for pkg in packages:
        path = downloads / pkg.deb_name
        if path.exists() and path.stat().st_size == pkg.size and sha256_file(path) == pkg.sha256:
            continue
        path.unlink(missing_ok=True)
        wanted.append(pkg)
    if wanted:
        tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=downloads))
        bar = progress.watch_dir(
            f"downloading {len(wanted)} CUDA .debs",
            tmp,
            total=sum(p.size for p in wanted),
            suffix=".deb",
        )
        try:
            _apt(
                ["apt-get", "download", *(f"{p.name}={p.version}" for p in wanted)],
                apt_dir,
                log,
                cwd=tmp,
            )
            for pkg in wanted:
                got = sorted(tmp.glob(f"{pkg.name}_*.deb"))
                if len(got) != 1 or sha256_file(got[0]) != pkg.sha256:
                    raise SourceError(
                        f"{pkg.name} {pkg.version}: not downloaded or sha256 not as indexed",
                        fix="retry; if it persists the mirror is inconsistent: try another mirror",
                    )
                os.replace(got[0], downloads / pkg.deb_name)
        finally:
            bar.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return [downloads / p.deb_name for p in packages]


def arrange_debian(extracted: Path, root: Path) -> list[str]:
    """Move Debian's FHS layout (from dpkg -x) into a standard CUDA root; return notes."""
    usr = extracted / "usr"
    tk = usr / "lib" / "nvidia-cuda-toolkit"
    notes = []
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for f in sorted((usr / "bin").iterdir()):
        # usr/bin/nvcc (and compute-sanitizer in 11.8) are shell wrappers with absolute
        # paths into tk; links point into tk too.
        if f.name in ("nvcc", "compute-sanitizer") or f.is_symlink():
            continue
        _move(f, bindir / f.name)
    _move(tk / "bin" / "nvcc", bindir / "nvcc")
    if (tk / "bin" / "crt").is_dir():
        _move(tk / "bin" / "crt", bindir / "crt")
    _move(tk / "bin" / "cicc", root / "nvvm" / "bin" / "cicc")
    _move(tk / "libdevice", root / "nvvm" / "libdevice")
    notes.append(
        "bin/nvcc is Debian's real nvcc (usr/bin/nvcc is a shell wrapper); "
        "cicc and libdevice moved under nvvm/"
    )
    if (tk / "bin" / "gcc").exists():
        notes.append(
            "Debian's gcc/g++ wrappers (pick the newest supported gcc-N) are not copied: "
            "pass -ccbin for a host gcc newer than max_gcc"
        )
    if (tk / "compute-sanitizer").is_dir():
        _move(tk / "compute-sanitizer", root / "compute-sanitizer")
        (bindir / "compute-sanitizer").symlink_to("../compute-sanitizer/compute-sanitizer")
    _move(usr / "include", root / "include")
    lib = root / "lib64"
    _move(usr / "lib" / DEBIAN_TRIPLET, lib)
    if (usr / "share" / "cmake").is_dir():
        # Their header-search files look in ../../../include: the same depth under lib64/cmake.
        _move(usr / "share" / "cmake", lib / "cmake")
    if (lib / "pkgconfig").is_dir():
        shutil.rmtree(lib / "pkgconfig")  # prefix=/usr: would point outside this root
    dropped = [p for p in sorted(lib.glob("*_static*.a")) if p.name not in DEBIAN_KEEP_ARCHIVES]
    if dropped:
        size = sum(p.stat().st_size for p in dropped)
        for p in dropped:
            p.unlink()
        notes.append(
            f"dropped {len(dropped)} static archives of the math libraries "
            f"({size / 2**20:.0f} MiB); "
            "kept libcudart_static.a, libcudadevrt.a, libculibos.a"
        )
    dangling = remove_dangling_symlinks(lib)
    if dangling:
        notes.append(
            f"removed {len(dangling)} dev links into runtime packages not taken "
            f"({', '.join(Path(d).name for d in dangling[:4])}, ...): "
            "lib64/stubs serves the link step"
        )
    write_profile(root)
    notes.append(
        "bin/nvcc.profile rewritten relocatable ($(_HERE_)); "
        "Debian's is /etc/nvcc.profile with /usr paths"
    )
    return notes


def debian_versions() -> str:
    return ", ".join(f"{v} ({s})" for v, s in DEBIAN_SUITES.items())


def _provide_debian(version: str, cache: Path, log: Path | None) -> Toolkit:
    suite = DEBIAN_SUITES.get(version)
    if suite is None:
        raise NotAvailable(
            f"Debian does not package CUDA {version}",
            fix=f"use a version Debian has: {debian_versions()}; or provider pypi (13.x) / system",
        )
    final = toolkits_dir(cache) / f"debian-{version}"

    def build(staging: Path) -> Toolkit:
        if platform.machine() != "x86_64":
            raise NotAvailable(
                f"the debian provider assembles x86_64 toolkits only, this is {platform.machine()}",
                fix="use provider system or conda-prefix",
            )
        for tool in ("apt-get", "apt-cache", "dpkg"):
            programs.require(tool)
        apt_dir = cache / "apt" / suite
        with locked(apt_dir):
            _apt_update(apt_dir, suite, log)
            policy = _apt(
                ["apt-cache", "show", "--no-all-versions", "nvidia-cuda-toolkit"], apt_dir, log
            ).output
            top = parse_apt_show(policy).get("nvidia-cuda-toolkit")
            if top is None or not top.version.startswith(version + "."):
                have = top.version if top else "none"
                raise NotAvailable(
                    f"Debian {suite} non-free has nvidia-cuda-toolkit {have}, not CUDA {version}",
                    fix="update DEBIAN_SUITES to the suite that has it, or use another provider",
                )
            deps = _apt(["apt-cache", "depends", "nvidia-cuda-dev"], apt_dir, log).output
            names = debian_package_set(deps)
            shown = parse_apt_show(
                _apt(["apt-cache", "show", "--no-all-versions", *names], apt_dir, log).output
            )
            missing = [n for n in names if n not in shown]
            if missing:
                raise NotAvailable(
                    f"Debian {suite} lacks {', '.join(missing)}",
                    fix="check the mirror's non-free component",
                )
            pkgs = [shown[n] for n in names]
            debs = _fetch_debs(pkgs, apt_dir, cache / "downloads" / "debian" / suite, log)
        extracted = staging / "_deb"
        for deb in progress.iterate(debs, "unpacking CUDA .debs", "debs", lambda p: p.name):
            proc.run(["dpkg", "-x", deb, extracted], log=log)
        notes = [f"debian {suite} non-free: " + ", ".join(f"{p.name} {p.version}" for p in pkgs)]
        notes += arrange_debian(extracted, staging)
        shutil.rmtree(extracted)
        problems = layout_problems(staging)
        if problems:
            raise MatrixError(
                f"assembled Debian CUDA {version} is incomplete: {'; '.join(problems)}",
                fix="the package split changed: compare `dpkg -c` of the .debs with arrange_debian",
            )
        return inspect_root(staging, "debian", notes, log=log, final_root=final)

    return _build_cached(final, build, need_gib=DEBIAN_NEED_GIB)


# --------------------------------------------------------------------------- pypi


def _pypi_refusal(version: str) -> NotAvailable:
    return NotAvailable(
        f"PyPI has no nvcc for CUDA {version}: the nvidia-cuda-nvcc-cu{version.split('.')[0]} "
        "wheels ship ptxas only, no nvcc (the nvcc driver is on PyPI from CUDA 13.0 on)",
        fix='use provider = "debian" for 12.4 (or "system" / "conda-prefix" for an installed one)',
    )


def _linux_x86_wheel(files: Iterable[index.IndexFile], version: Version) -> index.IndexFile | None:
    for f in files:
        if f.kind == "wheel" and f.version == version and not f.yanked and "x86_64" in f.filename:
            return f
    return None


def pypi_pick(files: Sequence[index.IndexFile], major: int, minor: int) -> index.IndexFile | None:
    """The newest final release of one component within CUDA ``major.minor``.

    Components are versioned apart (13.0: nvcc 13.0.88, runtime 13.0.96, cccl
    13.0.85); the newest of each within the minor release is what the last
    cuda-toolkit 13.0.* metapackage pins.
    """
    versions = sorted(
        {
            f.version
            for f in files
            if not f.version.is_prerelease
            and not f.version.is_devrelease
            and f.version.release[:2] == (major, minor)
        },
        reverse=True,
    )
    for v in versions:
        wheel = _linux_x86_wheel(files, v)
        if wheel is not None:
            return wheel
    return None


def pypi_pick_spec(
    files: Sequence[index.IndexFile], spec: SpecifierSet, release: tuple[int, int] | None = None
) -> index.IndexFile | None:
    """The newest Linux x86_64 wheel whose version the release's metapackage allows; of
    those, one of the release itself first (a range like nvjitlink's ">=13.0.88,<14"
    would otherwise take 13.5 into a 13.0 toolkit)."""
    allowed = {f.version for f in files if f.version in spec}
    ours = {v for v in allowed if release is not None and v.release[:2] == release}
    for v in [*sorted(ours, reverse=True), *sorted(allowed - ours, reverse=True)]:
        wheel = _linux_x86_wheel(files, v)
        if wheel is not None:
            return wheel
    return None


def parse_release_pins(requires: Iterable[str]) -> dict[str, SpecifierSet]:
    """The component pins of a cuda-toolkit metapackage (its "all" extra, Linux x86_64)."""
    env = {"sys_platform": "linux", "platform_machine": "x86_64", "extra": "all"}
    out: dict[str, SpecifierSet] = {}
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out[req.name] = req.specifier
    return out


def pypi_release_pins(major: int, minor: int) -> tuple[dict[str, SpecifierSet], str]:
    """The component versions of CUDA ``major.minor`` per NVIDIA's metapackage, and which
    metapackage said so; ({}, "") where the index has none for that release."""
    metas = [
        f
        for f in _index_files(PYPI_METAPACKAGE)
        if f.kind == "wheel"
        and not f.yanked
        and not f.version.is_prerelease
        and f.version.release[:2] == (major, minor)
    ]
    if not metas:
        return {}, ""
    meta = max(metas, key=lambda f: f.version)
    try:
        requires = index.wheel_requires(meta)
    except SourceError as exc:
        raise ToolError(
            f"cannot read {meta.filename}'s metadata from the package index: {exc.message}",
            fix="check the network / pip's index-url",
        ) from exc
    return parse_release_pins(requires), f"{PYPI_METAPACKAGE}=={meta.version}"


def pypi_missing_files(root: Path) -> dict[str, list[str]]:
    """Per component wheel, the files it should have put into ``root`` and did not."""
    out: dict[str, list[str]] = {}
    for project, files in PYPI_COMPONENTS.items():
        gone = [f for f in files if not any(root.glob(f))]
        if gone:
            out[project] = gone
    return out


def pypi_versions(nvcc_files: Iterable[index.IndexFile]) -> list[str]:
    rel = {
        f.version.release[:2]
        for f in nvcc_files
        if not f.version.is_prerelease and f.version.release[0] >= PYPI_MIN_MAJOR
    }
    return [f"{a}.{b}" for a, b in sorted(rel)]


def _index_files(project: str) -> Sequence[index.IndexFile]:
    try:
        return index.project_files(project)
    except SourceError as exc:
        raise ToolError(
            f"cannot read {project} from the package index: {exc.message}",
            fix="check the network / pip's index-url, or use provider debian or system",
        ) from exc


def _fetch_wheels(
    wheels: Sequence[index.IndexFile], downloads: Path, log: Path | None
) -> list[Path]:
    """Wheels in ``downloads`` via ``pip download --require-hashes`` (hashes from the index)."""
    downloads.mkdir(parents=True, exist_ok=True)
    wanted = []
    for w in wheels:
        path = downloads / w.filename
        if path.exists() and sha256_file(path) == w.sha256:
            continue
        path.unlink(missing_ok=True)
        wanted.append(w)
    if wanted:
        tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=downloads))
        # pip writes each wheel into its TMPDIR while it downloads: watched there.
        (tmp / "pip-tmp").mkdir()
        bar = progress.watch_dir(f"downloading {len(wanted)} CUDA wheels", tmp, suffix=".whl")
        try:
            reqs = tmp / "requirements.txt"
            reqs.write_text(
                "".join(f"{_project(w)}=={w.version} --hash=sha256:{w.sha256}\n" for w in wanted)
            )
            try:
                proc.run(
                    [
                        *programs.python_module("pip"),
                        "download",
                        "--no-deps",
                        "--only-binary=:all:",
                        "--require-hashes",
                        "-r",
                        reqs,
                        "-d",
                        tmp,
                    ],
                    log=log,
                    env={"PIP_DISABLE_PIP_VERSION_CHECK": "1", "TMPDIR": str(tmp / "pip-tmp")},
                )
            except CommandError as exc:
                raise ToolError(
                    f"pip could not download the CUDA wheels: {exc.tail.strip()[-400:]}",
                    fix="check the network / pip's index-url, or use provider debian or system",
                ) from exc
            for w in wanted:
                got = tmp / w.filename
                if not got.exists() or sha256_file(got) != w.sha256:
                    raise SourceError(
                        f"{w.filename}: not downloaded, or sha256 differs from the index",
                        fix="retry; if it persists, check pip's find-links / extra indexes",
                    )
                os.replace(got, downloads / w.filename)
        finally:
            bar.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return [downloads / w.filename for w in wheels]


def _project(w: index.IndexFile) -> str:
    return w.filename.split("-", 1)[0].replace("_", "-")


def arrange_pypi(unpacked: Path, root: Path) -> list[str]:
    """Merge the unzipped wheels' nvidia/cuXX/ tree into ``root``; return notes."""
    tops = sorted(p for p in (unpacked / "nvidia").glob("cu*") if p.is_dir())
    if len(tops) != 1:
        raise MatrixError(
            f"expected one nvidia/cuXX/ tree in the CUDA wheels, found {[p.name for p in tops]}",
            fix="the wheels' layout changed: update arrange_pypi",
        )
    for child in sorted(tops[0].iterdir()):
        _move(child, root / child.name)
    dist = root / "dist-info"
    for d in sorted(unpacked.glob("*.dist-info")):
        _move(d, dist / d.name)
    notes = [f"root is the wheels' nvidia/{tops[0].name}/"]
    lib = root / "lib"
    if lib.is_dir() and not (root / "lib64").exists():
        (root / "lib64").symlink_to("lib")
        notes.append("lib64 -> lib: the wheels' nvcc.profile looks for lib64")
    added = add_dev_symlinks(lib)
    if added:
        notes.append("dev links the wheels cannot carry: " + ", ".join(added))
    profile = root / "bin" / "nvcc.profile"
    text = profile.read_text() if profile.exists() else ""
    if not profile_is_relocatable(text):
        write_profile(root)
        notes.append("bin/nvcc.profile rewritten relocatable ($(_HERE_))")
    if (root / "include" / "cuda.h").is_file() and not (
        root / "lib64" / "stubs" / "libcuda.so"
    ).exists():
        n = make_driver_stub(root)
        notes.append(
            f"lib64/stubs/libcuda.so made here ({n} driver API entry points from include/cuda.h,"
            " each returning CUDA_ERROR_STUB_LIBRARY): the CUDA wheels ship no driver stub, and"
            " CMake's CUDA::cuda_driver (torch's CMake links it) needs one"
        )
    return notes


# The driver API's entry points as cuda.h declares them, after its version macros
# (cuCtxCreate -> cuCtxCreate_v2): what NVIDIA's own stub exports.
_DRIVER_FN = re.compile(r"\bCUresult\s+(?:CUDAAPI\s+)?(cu[A-Z]\w*)\s*\(")
CUDA_ERROR_STUB_LIBRARY = 34  # cuda.h: "the CUDA driver is a stub library"


def make_driver_stub(root: Path) -> int:
    """``lib64/stubs/libcuda.so`` (soname libcuda.so.1) with every driver API function of
    the toolkit's cuda.h, each returning CUDA_ERROR_STUB_LIBRARY, as NVIDIA's stub does:
    enough to link against and to load an extension where no driver is installed."""
    header = root / "include" / "cuda.h"
    found: set[str] = set()
    # the default names and the per-thread-default-stream ones (_ptds/_ptsz) ...
    for extra in ([], ["-DCUDA_API_PER_THREAD_DEFAULT_STREAM=1"]):
        argv = ["gcc", "-E", *extra, "-I", str(root / "include"), str(header)]
        found |= set(_DRIVER_FN.findall(proc.run(argv, stderr="drop").output))
    # ... and as written, with the graphics-interop headers (they need GL/EGL headers to
    # preprocess; their entry points are unversioned)
    for h in ("cuda.h", "cudaGL.h", "cudaEGL.h", "cudaVDPAU.h", "cudaProfiler.h"):
        if (root / "include" / h).is_file():
            found |= set(_DRIVER_FN.findall((root / "include" / h).read_text()))
    names = sorted(found)
    if not names:
        raise ToolError(
            f"no driver API functions found in {header}",
            fix="the header's layout changed: update toolkit._DRIVER_FN",
        )
    stubs = root / "lib64" / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    src = stubs / "libcuda_stub.c"
    src.write_text(
        "".join(f"int {n}(void) {{ return {CUDA_ERROR_STUB_LIBRARY}; }}\n" for n in names)
    )
    proc.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", stubs / "libcuda.so", src]
    )
    src.unlink()
    return len(names)


def _provide_pypi(version: str, cache: Path, log: Path | None) -> Toolkit:
    major, minor = (int(x) for x in version.split("."))
    if major < PYPI_MIN_MAJOR:
        raise _pypi_refusal(version)
    final = toolkits_dir(cache) / f"pypi-{version}"

    def build(staging: Path) -> Toolkit:
        picked: list[index.IndexFile] = []
        notes: list[str] = []
        pins, meta = pypi_release_pins(major, minor)
        if meta:
            notes.append(f"component versions pinned by {meta}")
        for project in (*PYPI_COMPONENTS, *PYPI_OPTIONAL):
            files = _index_files(project)
            spec = pins.get(project)
            wheel = (
                pypi_pick_spec(files, spec, (major, minor))
                if spec
                else pypi_pick(files, major, minor)
            )
            if wheel is None and project in PYPI_OPTIONAL:
                notes.append(
                    f"no {project} wheel for CUDA {version}: no bin/{project.rsplit('-', 1)[1]}"
                )
                continue
            if wheel is None:
                have = pypi_versions(_index_files("nvidia-cuda-nvcc"))
                raise NotAvailable(
                    f"PyPI has no {project} wheel for CUDA {version}",
                    fix=f"use a CUDA version PyPI has: {', '.join(have) or 'none'}",
                )
            picked.append(wheel)
        notes.insert(0, "pypi wheels: " + ", ".join(f"{_project(w)}=={w.version}" for w in picked))
        wheels = _fetch_wheels(picked, cache / "downloads" / "pypi", log)
        unpacked = staging / "_wheels"
        for w in progress.iterate(wheels, "unpacking CUDA wheels", "wheels", lambda p: p.name):
            unzip_wheel(w, unpacked)
        notes += arrange_pypi(unpacked, staging)
        shutil.rmtree(unpacked)
        missing = pypi_missing_files(staging)
        if missing:
            raise ToolError(
                f"assembled PyPI CUDA {version} is incomplete: "
                + "; ".join(f"{w} lacks {', '.join(fs)}" for w, fs in missing.items()),
                fix="the wheels' layout changed: compare their contents with "
                "toolkit.PYPI_COMPONENTS (or use provider debian or system)",
            )
        problems = layout_problems(staging)
        if problems:
            raise MatrixError(
                f"assembled PyPI CUDA {version} is incomplete: {'; '.join(problems)}",
                fix="the wheel split changed: compare the wheels' contents with PYPI_COMPONENTS",
            )
        tk = inspect_root(staging, "pypi", notes, log=log, final_root=final)
        if tk.version != version:
            raise MatrixError(
                f"the nvcc wheel for {version} reports CUDA {tk.version}",
                fix="report this: pypi_pick chose a wheel of another release",
            )
        return tk

    # A toolkit assembled before the driver stub existed is remade (the stub is the last
    # piece torch's CMake needed from it).
    return _build_cached(
        final,
        build,
        lambda tk: (tk.root / "lib64" / "stubs" / "libcuda.so").exists(),
        need_gib=PYPI_NEED_GIB,
    )


# --------------------------------------------------------------------------- system


def system_candidates(version: str, path: Path | None) -> list[Path]:
    if path is not None:
        return [path]
    out = []
    home = os.environ.get("CUDA_HOME")
    if home:
        out.append(Path(home))
    out += [Path(f"/usr/local/cuda-{version}"), Path("/usr/local/cuda")]
    return list(dict.fromkeys(out))


def _provide_system(version: str, path: Path | None, log: Path | None) -> Toolkit:
    looked: list[str] = []
    for cand in system_candidates(version, path):
        nvcc = cand / "bin" / "nvcc"
        if not nvcc.exists():
            looked.append(f"{cand} (no bin/nvcc)")
            continue
        tk = inspect_root(cand, "system", log=log)
        if tk.version != version:
            looked.append(f"{cand} (CUDA {tk.version})")
            continue
        problems = layout_problems(cand)
        notes = [f"existing install at {cand}"]
        if problems:
            notes.append("layout gaps: " + "; ".join(problems))
        return replace(tk, notes=tuple(notes))
    raise NotAvailable(
        f"no CUDA {version} installed here; looked at: {', '.join(looked)}",
        fix=f"install CUDA {version}, set CUDA_HOME to it, or use provider debian/pypi",
    )


# --------------------------------------------------------------------------- conda


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
    write_profile(view)
    return [
        f"symlink view of the env at {prefix}",
        f"include -> {include}, lib64 -> {lib}, nvvm -> {nvvm}",
        "bin/nvcc.profile is the view's own (relocatable), the env's is not used",
    ]


def _provide_conda(version: str, cache: Path, path: Path | None, log: Path | None) -> Toolkit:
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
    final = toolkits_dir(cache) / f"conda-prefix-{version}-{tag}"

    def build(staging: Path) -> Toolkit:
        notes = conda_view(prefix, staging)
        tk = inspect_root(staging, "conda-prefix", notes, log=log, final_root=final)
        if tk.version != version:
            raise NotAvailable(
                f"the env at {prefix} has CUDA {tk.version}, not {version}",
                fix=f"install cuda-nvcc={version} into the env, or ask for CUDA {tk.version}",
            )
        return tk

    def links_resolve(tk: Toolkit) -> bool:
        # The env may have been removed or rebuilt since the view was made.
        return all((tk.root / d).exists() for d in ("bin/nvcc", "include", "lib64", "nvvm"))

    return _build_cached(final, build, links_resolve)


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
        ver = parse_nvcc_version(proc.output_of([path / "bin" / "nvcc", "--version"]) or "")[0]
        return provide(provider, ver, path=path)
    raise NotAvailable(
        "no CUDA toolkit in the current environment (no CONDA_PREFIX/bin/nvcc, "
        "CUDA_HOME or nvcc on PATH)",
        fix="install cuda-nvcc into the env, or set CUDA_HOME",
    )
