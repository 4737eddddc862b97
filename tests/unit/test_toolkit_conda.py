"""Fast tests of the conda-prefix toolkit provider on a fake env."""

from __future__ import annotations

from pathlib import Path

import pytest
from toolkitfakes import HOST_CONFIG_124, fake_nvcc, touch

from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.toolkit import base


def conda_env(prefix: Path) -> Path:
    target = prefix / "targets" / "x86_64-linux"
    fake_nvcc(prefix / "bin")
    touch(prefix / "bin" / "python", "", 0o755)
    touch(prefix / "bin" / "ptxas", "", 0o755)
    touch(prefix / "nvvm" / "bin" / "cicc", "", 0o755)
    touch(target / "include" / "cuda_runtime.h")
    touch(target / "include" / "crt" / "host_config.h", HOST_CONFIG_124)
    touch(target / "lib" / "libcudart.so.12")
    (target / "lib" / "libcudart.so").symlink_to("libcudart.so.12")
    return prefix


def test_conda_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = conda_env(tmp_path / "env")
    before = sorted(str(p) for p in prefix.rglob("*"))
    monkeypatch.setenv("CONDA_PREFIX", str(prefix))
    tk = toolkit.provide("conda-prefix", "12.4", cache=tmp_path / "cache")
    view = tk.root
    assert view.parent == base.toolkits_dir(tmp_path / "cache")
    assert (view / "bin" / "nvcc").resolve() == prefix / "bin" / "nvcc"
    assert not (view / "bin" / "python").exists()
    assert (view / "include" / "cuda_runtime.h").exists()
    assert (view / "lib64" / "libcudart.so").exists()
    assert base.profile_is_relocatable((view / "bin" / "nvcc.profile").read_text())
    assert tk.max_gcc == 13
    assert sorted(str(p) for p in prefix.rglob("*")) == before  # the env is untouched
    assert toolkit.provide("conda-prefix", "12.4", cache=tmp_path / "cache", path=prefix) == tk


def test_conda_wrong_version_and_missing_parts(tmp_path: Path) -> None:
    prefix = conda_env(tmp_path / "env")
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("conda-prefix", "12.8", cache=tmp_path / "c", path=prefix)
    assert "has CUDA 12.4" in exc.value.message
    (prefix / "targets" / "x86_64-linux" / "include" / "cuda_runtime.h").unlink()
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("conda-prefix", "12.4", cache=tmp_path / "c", path=prefix)
    assert "cuda-cudart-dev" in exc.value.message


def test_conda_no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("conda-prefix", "12.4", cache=tmp_path)
    assert "CONDA_PREFIX" in exc.value.message and exc.value.fix
