"""find_package(Torch) in a tiny CMake project, configured with only the tool's fixups.

Real torch wheels (headers env), real toolkits (Debian 12.4, PyPI 13.0), PyPI cmake.
Includes the seed's bug: a conda-layout toolkit without nvToolsExt while the env has
pip's nvidia-nvtx: torch 2.6's CMake fails without the fixup and configures with it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from condalayout import conda_layout

from vllm_matrix.infra import index, proc, programs
from vllm_matrix.stages import env, toolkit
from vllm_matrix.stages.env import fixups

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]

PROJECT = """\
cmake_minimum_required(VERSION 3.26)
project(torchprobe LANGUAGES CXX CUDA)
find_package(Torch REQUIRED)
add_library(probe SHARED probe.cu)
target_link_libraries(probe PRIVATE ${TORCH_LIBRARIES})
message(STATUS "TORCH_OK ${Torch_VERSION} nvcc ${CMAKE_CUDA_COMPILER_VERSION}")
"""
SEED_ERROR = 'The link interface of target "torch::nvtoolsext" contains'


def configure(
    tmp: Path, tv: env.TorchEnv, fx: fixups.Fixups | None, base: dict[str, str]
) -> proc.Completed:
    src = tmp / "proj"
    src.mkdir(exist_ok=True)
    (src / "CMakeLists.txt").write_text(PROJECT)
    (src / "probe.cu").write_text("__global__ void k() {}\n")
    build = tmp / "build"
    shutil.rmtree(build, ignore_errors=True)
    cmake = tv.root / "bin" / "cmake"
    argv = [
        cmake,
        "-S",
        src,
        "-B",
        build,
        "-G",
        "Ninja",
        f"-DCMAKE_PREFIX_PATH={tv.torch_cmake_prefix}",
    ]
    if fx is not None:
        argv += fx.cmake_args()
    environ = fx.env(base) if fx is not None else base
    return proc.run(argv, env=environ, check=False, log=tmp / "configure.log", timeout=600)


def clean_env() -> dict[str, str]:
    """The caller's environment minus anything CUDA: only fixups may point at a toolkit."""
    import os

    drop = (
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDAToolkit_ROOT",
        "CUDACXX",
        "NVTOOLSEXT_PATH",
        "TORCH_CUDA_ARCH_LIST",
    )
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.mark.parametrize(
    ("torch", "provider", "cuda"),
    [("2.6.0", "debian", "12.4"), ("2.7.1", "debian", "12.4"), ("2.11.0", "pypi", "13.0")],
)
def test_find_package_torch_with_fixups(
    tmp_path: Path, torch: str, provider: str, cuda: str
) -> None:
    tk = toolkit.provide(provider, cuda)
    tv = env.provide("3.12", torch, "headers")
    fx = fixups.compute(tk, tv, ("9.0",))
    assert not fx.problems, fx.problems
    done = configure(tmp_path, tv, fx, clean_env())
    assert done.returncode == 0, done.output[-3000:]
    assert f"TORCH_OK {torch} nvcc {tk.full_version}" in done.output


def _seed_env(tmp: Path) -> env.TorchEnv:
    """The seed's env: torch 2.6.0 plus pip's nvidia-nvtx (as torch's deps bring it)."""
    base = env.provide("3.12", "2.6.0", "headers")
    root = tmp / "seed-env"
    uv = programs.uv()
    proc.run(
        [*uv, "venv", "--quiet", "--python", env.find_python("3.12"), root],
        env=env.uv_environment(),
    )
    py = root / "bin" / "python"
    proc.run(
        [
            *uv,
            "pip",
            "install",
            "--python",
            py,
            "--index-url",
            index.index_url(),
            "--no-deps",
            f"torch=={base.torch}",
            "nvidia-nvtx-cu12==12.4.127",
            "cmake>=3.26",
            "ninja",
        ],
        timeout=1800,
        env=env.uv_environment(),
    )
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    return env.TorchEnv(
        "3.12", "2.6.0", "headers", root, py, site, base.torch_version, base.torch_cuda
    )


def test_seed_nvtoolsext_bug_reproduced_and_fixed(tmp_path: Path) -> None:
    deb = toolkit.provide("debian", "12.4")
    prefix = conda_layout(deb.root, tmp_path / "conda")
    inc = prefix / "targets" / "x86_64-linux" / "include"
    for h in inc.glob("nvToolsExt*.h"):
        h.unlink()
    shutil.rmtree(inc / "nvtx3", ignore_errors=True)
    for lib in (prefix / "targets" / "x86_64-linux" / "lib").glob("libnvToolsExt*"):
        lib.unlink()
    tk = toolkit.provide("conda-prefix", "12.4", path=prefix, cache=tmp_path / "cache")
    tv = _seed_env(tmp_path)
    assert (tv.site / "nvidia" / "nvtx" / "include" / "nvToolsExt.h").exists()

    fx = fixups.compute(tk, tv, ("9.0",), tmp_path / "work")
    assert "NVTOOLSEXT_PATH" in fx.vars()
    without = fixups.Fixups(tuple(f for f in fx.items if f.name != "NVTOOLSEXT_PATH"), ())
    bad = configure(tmp_path, tv, without, clean_env())
    assert bad.returncode != 0 and SEED_ERROR in bad.output, bad.output[-3000:]

    # What the seed tried: NVTOOLSEXT_PATH at the pip package itself. Its lib/ has only
    # libnvToolsExt.so.1, which find_library does not take: still the same failure.
    attempt = fixups.Fixup("NVTOOLSEXT_PATH", str(tv.site / "nvidia" / "nvtx"), "seed's try")
    naive = fixups.Fixups((*without.items, attempt), ())
    bad2 = configure(tmp_path, tv, naive, clean_env())
    assert bad2.returncode != 0 and SEED_ERROR in bad2.output

    good = configure(tmp_path, tv, fx, clean_env())
    assert good.returncode == 0, good.output[-3000:]
    assert "TORCH_OK 2.6.0" in good.output


def test_env_is_reused(tmp_path: Path) -> None:
    import time

    env.provide("3.12", "2.6.0", "headers")
    t0 = time.monotonic()
    again = env.provide("3.12", "2.6.0", "headers")
    assert time.monotonic() - t0 < 1.0 and again.torch_version == "2.6.0+cu124"


def test_interrupted_env_is_rebuilt_not_reused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    half = env.env_dir("3.12", "2.6.0", "headers", cache)
    (half / "bin").mkdir(parents=True)  # what a killed run leaves: no completion marker
    tv = env.provide("3.12", "2.6.0", "headers", cache=cache)
    assert (tv.torch_dir / "version.py").exists()


def test_unknown_variant_and_missing_python() -> None:
    from vllm_matrix.infra.errors import ConfigError, NotAvailable

    with pytest.raises(ConfigError, match="did you mean 'headers'"):
        env.provide("3.12", "2.6.0", "header")
    with pytest.raises(NotAvailable, match=r"no Python 3\.99") as ei:
        env.find_python("3.99")
    assert "pyenv install" in (ei.value.fix or "")


def test_doctor_for_the_seed_cell_is_clean() -> None:
    from vllm_matrix.commands import doctor
    from vllm_matrix.infra.config import Cell

    cell = Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
    r = doctor.for_cell(cell)
    assert r.toolkit["version"] == "12.4.131" and r.toolkit["arches"][-1] == "compute_90"
    assert r.torch["version"] == "2.6.0+cu124" and r.torch["torch.version.cuda"] == "12.4"
    assert "sm_90" in r.torch["arch list"] and r.torch["C++ ABI"] == "_GLIBCXX_USE_CXX11_ABI=0"
    assert r.tools["cmake"] and r.tools["ninja"]
    assert not r.problems, r.problems


def test_pixi_snippet_matches_the_fixups_a_real_run_used(tmp_path: Path) -> None:
    from vllm_matrix.commands import pixi
    from vllm_matrix.infra.config import Cell
    from vllm_matrix.pipeline import context, runner

    cell = Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
    ws = context.Workspace(tmp_path)
    stages = runner.run_cell(cell, ws, depth="toolkit")
    assert stages[-1].stage == "env" and stages[-1].status == "pass"
    used = pixi.used_fixups(ws.results, cell)
    assert used is not None
    text = pixi.snippet(cell, used, max_jobs=None, cmake_min="3.26", max_gcc=13)
    act = pixi.parse(text)["activation"]["env"]
    # the fixups planned from facts alone are the ones the real run set, plus the nvtx
    # path a conda-forge env needs (cuda-nvtx-dev: targets/x86_64-linux) where Debian's
    # toolkit ships nvToolsExt.h and libnvToolsExt.so in its own include/ and lib64/
    planned = {f["name"] for f in pixi.planned_fixups(cell)}
    assert planned - {f["name"] for f in used if f["name"] in act} == {"NVTOOLSEXT_PATH"}
    names = {f["name"] for f in used if not f["name"].startswith("link:")}
    assert set(act) == names - set(pixi.NOT_IN_ACTIVATION)
    for f in used:
        if f["name"] in act:
            assert act[f["name"]] == pixi.translate(f)
