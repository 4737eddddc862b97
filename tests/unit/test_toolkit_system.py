"""Fast tests of the system toolkit provider (a fake nvcc)."""

from __future__ import annotations

from pathlib import Path

import pytest
from toolkitfakes import fake_nvcc

from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.toolkit import system


def test_system_candidates_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert system.system_candidates("12.4", None) == [
        tmp_path,
        Path("/usr/local/cuda-12.4"),
        Path("/usr/local/cuda"),
    ]
    assert system.system_candidates("12.4", tmp_path / "x") == [tmp_path / "x"]


def test_system_explicit_path(tmp_path: Path) -> None:
    fake_nvcc(tmp_path / "bin")
    tk = toolkit.provide("system", "12.4", path=tmp_path)
    assert (tk.root, tk.full_version, tk.archs) == (tmp_path, "12.4.131", ("5.0", "7.5", "9.0"))
    assert any("layout gaps" in n for n in tk.notes)
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("system", "12.8", path=tmp_path)
    assert f"{tmp_path} (CUDA 12.4)" in exc.value.message


def test_system_missing_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("system", "12.4", path=tmp_path / "nope")
    assert f"{tmp_path / 'nope'} (no bin/nvcc)" in exc.value.message
    assert "CUDA_HOME" in str(exc.value.fix)
