"""Fast tests of the toolkit providers' file helpers."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from vllm_matrix.infra.errors import SourceError
from vllm_matrix.stages.toolkit import files


def make_wheel(path: Path, files: dict[str, tuple[str, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, text)
    return path


def test_unzip_wheel_keeps_exec_bits(tmp_path: Path) -> None:
    whl = make_wheel(
        tmp_path / "w.whl",
        {"nvidia/cu13/bin/nvcc": ("elf", 0o755), "nvidia/cu13/include/a.h": ("h", 0o644)},
    )
    files.unzip_wheel(whl, tmp_path / "out")
    assert os.access(tmp_path / "out" / "nvidia" / "cu13" / "bin" / "nvcc", os.X_OK)
    assert not os.access(tmp_path / "out" / "nvidia" / "cu13" / "include" / "a.h", os.X_OK)


def test_unzip_wheel_refuses_path_escape(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path / "w.whl", {"../evil": ("x", 0o644)})
    with pytest.raises(SourceError):
        files.unzip_wheel(whl, tmp_path / "out")
    assert not (tmp_path / "evil").exists()
