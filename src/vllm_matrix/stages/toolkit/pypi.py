"""The pypi provider: NVIDIA's CUDA 13+ component wheels, unzipped and merged."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vllm_matrix.infra import index, proc, programs, progress
from vllm_matrix.infra.cache import scratch_dir, sha256_file, sweep
from vllm_matrix.infra.errors import CommandError, MatrixError, NotAvailable, SourceError, ToolError
from vllm_matrix.knowledge import toolchains
from vllm_matrix.stages.toolkit import base
from vllm_matrix.stages.toolkit.base import Toolkit
from vllm_matrix.stages.toolkit.files import add_dev_symlinks, move, unzip_wheel
from vllm_matrix.stages.toolkit.stub import make_driver_stub

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
# wheels, 1.9 GiB assembled), with headroom.
PYPI_NEED_GIB = 4.0
PYPI_METAPACKAGE = "cuda-toolkit"


def pypi_min_major() -> int:
    """The first CUDA major whose nvcc is on PyPI: the knowledge's [provider.pypi] min_major."""
    return toolchains.load().providers["pypi"].min_major


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
        if not f.version.is_prerelease and f.version.release[0] >= pypi_min_major()
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
    sweep(downloads, "download", "")  # what a killed run left half-downloaded
    wanted = []
    for w in wheels:
        path = downloads / w.filename
        if path.exists() and sha256_file(path) == w.sha256:
            continue
        path.unlink(missing_ok=True)
        wanted.append(w)
    if wanted:
        tmp = scratch_dir(downloads, "download")  # a killed run's is swept
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
        move(child, root / child.name)
    dist = root / "dist-info"
    for d in sorted(unpacked.glob("*.dist-info")):
        move(d, dist / d.name)
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
    if not base.profile_is_relocatable(text):
        base.write_profile(root)
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


def provide(version: str, cache: Path, log: Path | None) -> Toolkit:
    major, minor = (int(x) for x in version.split("."))
    if major < pypi_min_major():
        raise _pypi_refusal(version)
    final = base.toolkits_dir(cache) / f"pypi-{version}"

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
        problems = base.layout_problems(staging)
        if problems:
            raise MatrixError(
                f"assembled PyPI CUDA {version} is incomplete: {'; '.join(problems)}",
                fix="the wheel split changed: compare the wheels' contents with PYPI_COMPONENTS",
            )
        tk = base.inspect_root(staging, "pypi", notes, log=log, final_root=final)
        if tk.version != version:
            raise MatrixError(
                f"the nvcc wheel for {version} reports CUDA {tk.version}",
                fix="report this: pypi_pick chose a wheel of another release",
            )
        return tk

    # A toolkit assembled before the driver stub existed is remade (the stub is the last
    # piece torch's CMake needed from it).
    return base.build_cached(
        final,
        build,
        lambda tk: (tk.root / "lib64" / "stubs" / "libcuda.so").exists(),
        need_gib=PYPI_NEED_GIB,
    )
