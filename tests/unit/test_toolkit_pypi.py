"""Fast tests of the pypi toolkit provider on small fixture trees (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from packaging.version import Version
from toolkitfakes import WHEEL_PROFILE, fake_nvcc, touch

from vllm_matrix.infra import index
from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.toolkit import base, pypi


@pytest.mark.parametrize("version", ["12.4", "12.8", "11.8"])
def test_pypi_refuses_cuda_12_with_the_reason(version: str, tmp_path: Path) -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("pypi", version, cache=tmp_path)
    assert "ptxas only" in exc.value.message and "no nvcc" in exc.value.message
    assert 'provider = "debian"' in str(exc.value.fix) and "12.4" in str(exc.value.fix)
    assert not (tmp_path / "toolkits").exists()


def test_arrange_pypi(tmp_path: Path) -> None:
    unpacked = tmp_path / "u"
    cu = unpacked / "nvidia" / "cu13"
    touch(cu / "bin" / "nvcc.profile", WHEEL_PROFILE)
    fake_nvcc(cu / "bin", "13.0", "13.0.88")
    touch(cu / "nvvm" / "bin" / "cicc", "c", 0o755)
    touch(cu / "nvvm" / "libdevice" / "libdevice.10.bc")
    touch(cu / "include" / "cuda_runtime.h")
    touch(cu / "include" / "crt" / "host_config.h", "#if __GNUC__ > 15\n#endif\n")
    touch(cu / "include" / "nv" / "target")
    touch(cu / "lib" / "libcudart.so.13")
    touch(cu / "lib" / "libcudart_static.a")
    touch(unpacked / "nvidia_cuda_nvcc-13.0.88.dist-info" / "RECORD")
    root = tmp_path / "root"
    root.mkdir()
    notes = pypi.arrange_pypi(unpacked, root)
    assert base.layout_problems(root) == []
    assert (root / "lib64").is_symlink() and os.readlink(root / "lib64") == "lib"
    assert os.readlink(root / "lib" / "libcudart.so") == "libcudart.so.13"
    assert (root / "bin" / "nvcc.profile").read_text() == WHEEL_PROFILE  # already relocatable
    assert (root / "dist-info" / "nvidia_cuda_nvcc-13.0.88.dist-info" / "RECORD").exists()
    assert any("lib64 -> lib" in n for n in notes)
    tk = base.inspect_root(root, "pypi", notes)
    assert (tk.version, tk.full_version, tk.archs, tk.max_gcc) == (
        "13.0",
        "13.0.88",
        ("5.0", "7.5", "9.0"),
        15,
    )


def _file(version: str, filename: str, yanked: bool = False) -> index.IndexFile:
    return index.IndexFile(
        filename=filename,
        url=f"https://files.invalid/{filename}",
        sha256="0" * 64,
        version=Version(version),
        kind="wheel",
        yanked=yanked,
    )


def test_pypi_pick_newest_final_x86_wheel_of_the_minor() -> None:
    files = [
        _file("13.0.48", "n-13.0.48-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.88", "n-13.0.88-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.99", "n-13.0.99-py3-none-manylinux2014_aarch64.whl"),
        _file("13.1.80", "n-13.1.80-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.100rc1", "n-13.0.100rc1-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.101", "n-13.0.101-py3-none-manylinux2014_x86_64.whl", yanked=True),
    ]
    got = pypi.pypi_pick(files, 13, 0)
    assert got is not None and str(got.version) == "13.0.88"
    assert pypi.pypi_pick(files, 13, 2) is None
    assert pypi.pypi_versions(files) == ["13.0", "13.1"]
