"""--env current inside a venv standing for the seed's Pixi env.

The venv: torch 2.6.0 + pip's nvidia packages (nvtx among them) + vllm-matrix itself.
The toolkit: a conda-layout tree (targets/x86_64-linux/include, no nvToolsExt.h, no
libnvToolsExt) assembled from the real Debian 12.4 files, found through CONDA_PREFIX.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from condalayout import conda_layout

from vllm_matrix.infra import index, proc, programs
from vllm_matrix.stages import env, toolkit

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]
REPO = Path(__file__).parents[2]
NVIDIA = (
    "nvidia-nvtx-cu12==12.4.127",
    "nvidia-cuda-runtime-cu12==12.4.127",
    "nvidia-cuda-nvrtc-cu12==12.4.127",
)


@pytest.fixture(scope="module")
def seed_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("seed")
    deb = toolkit.provide("debian", "12.4")
    prefix = conda_layout(deb.root, tmp / "conda")
    inc = prefix / "targets" / "x86_64-linux" / "include"
    for h in inc.glob("nvToolsExt*.h"):
        h.unlink()
    shutil.rmtree(inc / "nvtx3", ignore_errors=True)
    for lib in (prefix / "targets" / "x86_64-linux" / "lib").glob("libnvToolsExt*"):
        lib.unlink()
    venv = tmp / "venv"
    uv = programs.uv()
    proc.run([*uv, "venv", "--quiet", "--python", env.find_python("3.12"), venv])
    py = venv / "bin" / "python"
    base = [*uv, "pip", "install", "--quiet", "--python", py, "--index-url", index.index_url()]
    proc.run([*base, "--no-deps", "torch==2.6.0", *NVIDIA], timeout=1800, env=env.uv_environment())
    proc.run([*base, "-e", REPO, "cmake>=3.26", "ninja"], timeout=1800, env=env.uv_environment())
    return prefix, venv


def current_environ(prefix: Path, venv: Path) -> dict[str, str]:
    """The seed's shell: the conda prefix active, the venv first on PATH, nothing of ours."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_HOME", "CUDA_PATH", "NVTOOLSEXT_PATH", "VIRTUAL_ENV")
    }
    return environ | {
        "CONDA_PREFIX": str(prefix),
        "PATH": f"{venv / 'bin'}{os.pathsep}{environ.get('PATH', '')}",
    }


def run_current(prefix: Path, venv: Path, *args: str) -> proc.Completed:
    return proc.run(
        [venv / "bin" / "python", "-m", "vllm_matrix", *args],
        env=current_environ(prefix, venv),
        check=False,
        timeout=1800,
    )


def test_doctor_env_current_names_the_nvtx_problem_and_its_fixup(
    seed_env: tuple[Path, Path],
) -> None:
    prefix, venv = seed_env
    done = run_current(prefix, venv, "doctor", "--env", "current", "--arch", "9.0", "--json")
    assert "{" in done.output, done.output[-3000:]
    rep = json.loads(done.output[done.output.index("{") :])
    assert rep["toolkit"]["provider"] == "conda-prefix" and rep["toolkit"]["version"] == "12.4.131"
    assert rep["torch"]["version"] == "2.6.0+cu124"
    fx = {f["name"]: f for f in rep["fixups"]}
    assert "NVTOOLSEXT_PATH" in fx and "lacks nvToolsExt.h" in fx["NVTOOLSEXT_PATH"]["reason"]
    assert not rep["problems"], rep["problems"]
    assert done.returncode == 0


PROBE_085 = ("--vllm", "0.8.5", "--depth", "probe")


@pytest.mark.heavy
def test_probe_of_085_passes_in_the_seed_env(seed_env: tuple[Path, Path], tmp_path: Path) -> None:
    # About 4-8 min on 2 cores: the 0.8.5 probe (front end of 8+ units) with the conda-layout
    # toolkit and the venv's torch, through `run --env current` (no env is created).
    prefix, venv = seed_env
    (tmp_path / "patches").symlink_to(REPO / "patches")
    environ = {"TORCH_CUDA_ARCH_LIST": "9.0"}
    done = proc.run(
        [venv / "bin" / "python", "-m", "vllm_matrix", "run", "--env", "current", *PROBE_085],
        env=environ | current_environ(prefix, venv),
        cwd=tmp_path,
        check=False,
        timeout=3600,
    )
    assert done.returncode == 0, done.output[-3000:]
    (path,) = (tmp_path / "results").glob("*.json")
    assert path.name == "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90-current.json"
    d = json.loads(path.read_text())
    stages = {s["stage"]: s for s in d["stages"]}
    assert stages["toolkit"]["details"]["provider"] == "conda-prefix"
    assert "NVTOOLSEXT_PATH" in {f["name"] for f in stages["env"]["details"]["fixups"]["set"]}
    assert stages["probe"]["status"] == "pass", stages["probe"]["summary"]
    assert d["verdict"]["verdict"] == "PASS" and d["verdict"]["depth"] == "probe"
    print(stages["probe"]["summary"], stages["probe"]["seconds"])
