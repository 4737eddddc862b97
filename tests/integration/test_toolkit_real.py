"""Real toolkits: assembled from Debian's archive and PyPI, the system one, a conda layout.

Each is provided once per module (the cache makes later sessions instant) and must
compile AND link a CUDA program for sm_90 that uses libcu++ (nv/target) and CUB.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from condalayout import conda_layout
from conftest import skip_or_fail

from vllm_matrix.infra import proc
from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.toolkit import base

pytestmark = pytest.mark.integration

PROGRAM = r"""
#include <cstdio>
#include <nv/target>
#include <cuda/std/atomic>
#include <cub/cub.cuh>

__global__ void bump(int *x) {
  NV_IF_TARGET(NV_PROVIDES_SM_90, (atomicAdd(x, 1);))
}

int main() {
  int *d = nullptr;
  cudaError_t err = cudaMalloc(&d, sizeof(int));
  bump<<<1, 1>>>(d);
  std::printf("%s\n", cudaGetErrorString(err));
  return 0;
}
"""


def _provide(provider: str, version: str) -> toolkit.Toolkit:
    try:
        return toolkit.provide(provider, version)
    except NotAvailable as exc:
        skip_or_fail(f"{provider} {version} not available here: {exc}")


@pytest.fixture(scope="module")
def debian_124() -> toolkit.Toolkit:
    return _provide("debian", "12.4")


@pytest.fixture(scope="module")
def pypi_130() -> toolkit.Toolkit:
    return _provide("pypi", "13.0")


@pytest.fixture(scope="module")
def system_130() -> toolkit.Toolkit:
    if not Path("/usr/local/cuda/bin/nvcc").exists():
        skip_or_fail("no /usr/local/cuda on this machine", machine=True)
    return _provide("system", "13.0")


def cuobjdump_for(tk: toolkit.Toolkit, request: pytest.FixtureRequest) -> Path:
    """The toolkit's own cuobjdump, else Debian 12.4's (it reads 13.0 binaries too)."""
    own = tk.root / "bin" / "cuobjdump"
    if own.exists():
        return own
    found = shutil.which("cuobjdump")
    if found:
        return Path(found)
    debian = request.getfixturevalue("debian_124")
    assert isinstance(debian, toolkit.Toolkit)
    return debian.root / "bin" / "cuobjdump"


def compile_link_check(tk: toolkit.Toolkit, work: Path, request: pytest.FixtureRequest) -> None:
    src = work / "bump.cu"
    src.write_text(PROGRAM)
    exe = work / "bump"
    proc.run(
        [tk.nvcc, "-gencode", "arch=compute_90,code=sm_90", src, "-o", exe],
        cwd=work,
        log=work / "nvcc.log",
    )
    assert os.access(exe, os.X_OK)
    listing = proc.run([cuobjdump_for(tk, request), "--list-elf", exe]).output
    assert "sm_90" in listing, listing


def check_version(tk: toolkit.Toolkit, version: str) -> None:
    out = proc.run([tk.nvcc, "--version"]).output
    assert f"release {version}," in out
    assert tk.version == version and tk.full_version.startswith(version + ".")
    assert base.layout_problems(tk.root) == []


# --------------------------------------------------------------------------- debian


def test_debian_124_version_archs(debian_124: toolkit.Toolkit) -> None:
    check_version(debian_124, "12.4")
    assert debian_124.archs[-1] == "9.0" and "5.0" in debian_124.archs
    assert debian_124.max_gcc == 13
    assert base.profile_is_relocatable((debian_124.root / "bin" / "nvcc.profile").read_text())


def test_debian_124_compiles_and_links_sm90(
    debian_124: toolkit.Toolkit, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    compile_link_check(debian_124, tmp_path, request)


def test_debian_124_warm_is_the_same(debian_124: toolkit.Toolkit) -> None:
    assert toolkit.provide("debian", "12.4") == debian_124


# --------------------------------------------------------------------------- pypi


def test_pypi_130_version_archs(pypi_130: toolkit.Toolkit) -> None:
    check_version(pypi_130, "13.0")
    assert pypi_130.archs[0] == "7.5" and "12.0" in pypi_130.archs
    assert (pypi_130.root / "lib64").is_symlink()


def test_pypi_130_compiles_and_links_sm90(
    pypi_130: toolkit.Toolkit, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    compile_link_check(pypi_130, tmp_path, request)


# --------------------------------------------------------------------------- system


def test_system_130_version_archs(system_130: toolkit.Toolkit) -> None:
    check_version(system_130, "13.0")
    assert system_130.archs[0] == "7.5"


def test_system_130_compiles_and_links_sm90(
    system_130: toolkit.Toolkit, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    compile_link_check(system_130, tmp_path, request)


# --------------------------------------------------------------------------- conda


def test_conda_layout_view_compiles_and_links_sm90(
    debian_124: toolkit.Toolkit, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    prefix = conda_layout(debian_124.root, tmp_path / "env")
    before = {p: p.stat().st_mtime_ns for p in prefix.rglob("*") if not p.is_symlink()}
    tk = toolkit.provide("conda-prefix", "12.4", path=prefix, cache=tmp_path / "cache")
    assert tk.root != prefix and tk.root.is_relative_to(tmp_path / "cache")
    assert (tk.root / "include" / "cuda_runtime.h").exists()
    assert (tk.root / "lib64" / "libcudart.so").exists()
    assert tk.archs == debian_124.archs and tk.max_gcc == 13
    work = tmp_path / "work"
    work.mkdir()
    compile_link_check(tk, work, request)
    # nvcc reads the profile beside the path it was started as: the view's, not the env's.
    dry = proc.run([tk.nvcc, "--dryrun", "-c", work / "bump.cu"], cwd=work).output
    assert f'INCLUDES="-I{tk.root}/bin/../include"' in dry, dry
    after = {p: p.stat().st_mtime_ns for p in prefix.rglob("*") if not p.is_symlink()}
    assert after == before  # the env is not modified


CMAKE_TARGETS = (
    "cudart",
    "cuda_driver",
    "cublas",
    "cublasLt",
    "cusparse",
    "cusolver",
    "curand",
    "cufft",
    "nvrtc",
)


def test_pypi_130_has_what_torchs_cmake_links(pypi_130: toolkit.Toolkit, tmp_path: Path) -> None:
    # torch's CMake config links these CUDA:: targets (vLLM's configure of 0.20.0 failed
    # at generate on CUDA::cuda_driver before the toolkit carried a driver stub).
    cmake = shutil.which("cmake")
    if cmake is None:
        skip_or_fail("cmake not installed (Debian package cmake)")
    src = tmp_path / "src"
    src.mkdir()
    checks = "".join(
        f'if(NOT TARGET CUDA::{t})\n  message(FATAL_ERROR "no CUDA::{t}")\nendif()\n'
        for t in CMAKE_TARGETS
    )
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.22)\nproject(t LANGUAGES C)\n"
        "find_package(CUDAToolkit REQUIRED)\n"
        + checks
        + "get_target_property(drv CUDA::cuda_driver IMPORTED_LOCATION)\n"
        + 'message(STATUS "driver=${drv}")\n'
    )
    done = proc.run(
        [cmake, "-S", src, "-B", tmp_path / "b", f"-DCUDAToolkit_ROOT={pypi_130.root}"],
        check=False,
    )
    assert done.returncode == 0, done.output[-2000:]
    assert re.search(r"driver=\S*/lib(64)?/stubs/libcuda.so", done.output), done.output[-2000:]
