from __future__ import annotations

import os
from pathlib import Path

from vllm_matrix.stages.env import TorchEnv, fixups
from vllm_matrix.stages.toolkit import Toolkit


def toolkit(tmp: Path, version: str = "12.4", nvtx: bool = True) -> Toolkit:
    root = tmp / "cuda"
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "lib64").mkdir()
    if nvtx:
        (root / "include" / "nvToolsExt.h").write_text("")
        (root / "lib64" / "libnvToolsExt.so").write_text("")
    return Toolkit(
        "conda-prefix", version, version + ".0", root, root / "bin" / "nvcc", ("8.0", "9.0"), 13, ()
    )


def torch_env(tmp: Path, pip_nvtx: bool = False, torch: str = "2.6.0+cu124") -> TorchEnv:
    root = tmp / "env"
    site = root / "lib" / "python3.12" / "site-packages"
    (site / "torch").mkdir(parents=True)
    if pip_nvtx:
        (site / "nvidia" / "nvtx" / "include").mkdir(parents=True)
        (site / "nvidia" / "nvtx" / "include" / "nvToolsExt.h").write_text("")
        (site / "nvidia" / "nvtx" / "lib").mkdir()
        (site / "nvidia" / "nvtx" / "lib" / "libnvToolsExt.so.1").write_text("")
    return TorchEnv(
        "3.12", torch.split("+")[0], "headers", root, root / "bin" / "python", site, torch, "12.4"
    )


def test_basic_fixups_name_their_reasons(tmp_path: Path) -> None:
    tk, env = toolkit(tmp_path), torch_env(tmp_path)
    fx = fixups.compute(tk, env, ("9.0", "12.0f"), tmp_path / "work")
    v = fx.vars()
    assert v["CUDA_HOME"] == v["CUDA_PATH"] == v["CUDAToolkit_ROOT"] == str(tk.root)
    assert v["CUDACXX"] == str(tk.nvcc)
    assert v["VLLM_PYTHON_EXECUTABLE"] == str(env.python_exe)
    assert v["TORCH_CUDA_ARCH_LIST"] == "9.0;12.0"  # torch's CMake can't parse 12.0f
    assert "NVTOOLSEXT_PATH" not in v and not fx.problems
    assert all(f.reason for f in fx.items)
    merged = fx.env({"PATH": "/usr/bin", "HOME": "/root"})
    assert merged["PATH"].startswith(str(tk.root / "bin") + os.pathsep)
    assert merged["PATH"].endswith(os.pathsep + "/usr/bin") and merged["HOME"] == "/root"
    assert f"-DCMAKE_CUDA_COMPILER={tk.nvcc}" in fx.cmake_args()


def test_conda_toolkit_without_nvtx_uses_the_envs_pip_nvtx(tmp_path: Path) -> None:
    tk, env = toolkit(tmp_path, nvtx=False), torch_env(tmp_path, pip_nvtx=True)
    fx = fixups.compute(tk, env, ("9.0",), tmp_path / "work")
    home = Path(fx.vars()["NVTOOLSEXT_PATH"])
    assert (home / "include" / "nvToolsExt.h").exists()
    link = home / "lib" / "libnvToolsExt.so"
    assert link.is_symlink() and link.resolve().name == "libnvToolsExt.so.1"
    assert any(f.name == f"link:{link}" for f in fx.items)
    again = fixups.compute(tk, env, ("9.0",), tmp_path / "work")  # reused, not rebuilt
    assert again.vars()["NVTOOLSEXT_PATH"] == str(home)


def test_nvtx_missing_everywhere_is_a_problem_with_a_fix(tmp_path: Path) -> None:
    fx = fixups.compute(
        toolkit(tmp_path, nvtx=False), torch_env(tmp_path), ("9.0",), tmp_path / "work"
    )
    assert len(fx.problems) == 1
    assert "CUDA::nvToolsExt" in fx.problems[0].message
    assert "nvidia-nvtx-cu12" in fx.problems[0].fix


def test_cuda_12_9_and_later_need_no_nvtoolsext_with_torch_2_8(tmp_path: Path) -> None:
    env = torch_env(tmp_path, torch="2.8.0+cu129")
    fx = fixups.compute(toolkit(tmp_path, "12.9", nvtx=False), env, ("9.0",), tmp_path / "work")
    assert not fx.problems and "NVTOOLSEXT_PATH" not in fx.vars()


def test_torch_2_7_with_cuda_12_9_is_rescued_by_the_pip_nvtx(tmp_path: Path) -> None:
    # torch <= 2.7 links CUDA::nvToolsExt; CUDA 12.9 ships no libnvToolsExt (vLLM #20892)
    env = torch_env(tmp_path, pip_nvtx=True, torch="2.7.1+cu128")
    fx = fixups.compute(toolkit(tmp_path, "12.9", nvtx=False), env, ("12.0",), tmp_path / "w")
    assert not fx.problems and "NVTOOLSEXT_PATH" in fx.vars()


def test_torch_2_7_with_cuda_13_and_no_nvtx_is_a_problem(tmp_path: Path) -> None:
    env = torch_env(tmp_path, torch="2.7.1+cu128")
    fx = fixups.compute(toolkit(tmp_path, "13.0", nvtx=False), env, ("12.0",), tmp_path / "w")
    assert len(fx.problems) == 1 and "CUDA::nvToolsExt" in fx.problems[0].message


def test_nvtx_requirement_read_from_torch_metadata(tmp_path: Path) -> None:
    from vllm_matrix.stages.env import nvtx_requirement

    def meta(version: str, req: str) -> Path:
        site = tmp_path / version
        d = site / f"torch-{version}.dist-info"
        d.mkdir(parents=True)
        (d / "METADATA").write_text(f"Name: torch\nVersion: {version}\nRequires-Dist: {req}\n")
        return site

    old = 'nvidia-nvtx-cu12 (==12.4.127) ; platform_system == "Linux"'
    assert nvtx_requirement(meta("2.6.0", old)) == "nvidia-nvtx-cu12==12.4.127"
    new = 'nvidia-nvtx-cu12==12.8.55; platform_system == "Linux"'
    assert nvtx_requirement(meta("2.7.1+cu128", new)) == "nvidia-nvtx-cu12==12.8.55"
    assert nvtx_requirement(meta("2.8.0", new)) is None  # nvtx3, header-only
