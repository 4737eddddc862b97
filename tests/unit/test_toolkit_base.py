"""Fast tests of the toolkit record, nvcc parsing, nvcc.profile and the toolkit cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toolkitfakes import DEBIAN_PROFILE, HOST_CONFIG_124, WHEEL_PROFILE, fake_nvcc, touch

from vllm_matrix.infra.errors import MatrixError, NotAvailable
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.toolkit import base

NVCC_124 = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2024 NVIDIA Corporation
Built on Thu_Mar_28_02:18:24_PDT_2024
Cuda compilation tools, release 12.4, V12.4.131
Build cuda_12.4.r12.4/compiler.34097967_0
"""


# --------------------------------------------------------------------------- parsing


def test_parse_nvcc_version() -> None:
    assert base.parse_nvcc_version(NVCC_124) == ("12.4", "12.4.131")


def test_parse_nvcc_version_garbage_says_what_it_saw() -> None:
    with pytest.raises(MatrixError) as exc:
        base.parse_nvcc_version("segfault")
    assert "segfault" in str(exc.value.fix)


def test_parse_arch_list_sorts_numerically() -> None:
    # nvcc 13.0 prints 110 before 103.
    out = "compute_75\ncompute_90\ncompute_100\ncompute_110\ncompute_103\ncompute_120\n"
    assert base.nvcc_arch_list(out) == ("7.5", "9.0", "10.0", "10.3", "11.0", "12.0")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (HOST_CONFIG_124, 13),
        ("#if defined(__GNUC__)\n#if __GNUC__ > 15\n#error\n#endif\n", 15),
        ("#if __clang_major__ >= 18\n#endif\n", None),
    ],
)
def test_parse_max_gcc(text: str, want: int | None) -> None:
    assert base.parse_max_gcc(text) == want


def test_toolkit_json_roundtrip() -> None:
    tk = toolkit.Toolkit(
        "debian", "12.4", "12.4.131", Path("/r"), Path("/r/bin/nvcc"), ("5.0", "9.0"), 13, ("n",)
    )
    data = json.loads(json.dumps(tk.to_json()))
    assert data["archs"] == ["5.0", "9.0"] and data["root"] == "/r"
    assert toolkit.Toolkit.from_json(data) == tk


# --------------------------------------------------------------------------- profile


def test_written_profile_is_relocatable_and_standard() -> None:
    text = base.profile_text()
    assert base.profile_is_relocatable(text)
    assert "NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice" in text
    assert '"-I$(TOP)/include"' in text
    assert '"-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"' in text
    assert "include/cccl" not in text
    assert '"-isystem" "$(TOP)/include/cccl"' in base.profile_text(cccl_subdir=True)


def test_relocatable_check() -> None:
    assert not base.profile_is_relocatable(DEBIAN_PROFILE)
    assert base.profile_is_relocatable(WHEEL_PROFILE)
    assert not base.profile_is_relocatable("PATH += $(_HERE_):\nINCLUDES += -I/opt/cuda/include\n")


def test_write_profile_replaces_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc.profile").symlink_to("/etc/nvcc.profile")
    (tmp_path / "include" / "cccl").mkdir(parents=True)
    base.write_profile(tmp_path)
    profile = tmp_path / "bin" / "nvcc.profile"
    assert not profile.is_symlink()
    assert "include/cccl" in profile.read_text()


# --------------------------------------------------------------------------- cache


def fake_toolkit(root: Path, provider: str = "pypi") -> toolkit.Toolkit:
    return toolkit.Toolkit(
        provider, "13.0", "13.0.88", root, root / "bin" / "nvcc", ("7.5",), 15, ()
    )


def test_build_cached_builds_once(tmp_path: Path) -> None:
    final = base.toolkits_dir(tmp_path) / "pypi-13.0"
    calls = []

    def build(staging: Path) -> toolkit.Toolkit:
        calls.append(staging)
        assert staging != final and not final.exists()
        fake_nvcc(staging / "bin")
        return fake_toolkit(final)

    first = base.build_cached(final, build)
    second = base.build_cached(final, build)
    assert first == second and len(calls) == 1
    assert (final / base.MARKER).is_file() and (final / "bin" / "nvcc").is_file()
    assert [p.name for p in final.parent.iterdir() if p.name.endswith(".partial")] == []


def test_build_cached_redoes_a_partial_or_stale_dir(tmp_path: Path) -> None:
    final = tmp_path / "pypi-13.0"
    touch(final / "bin" / "half-copied")  # no marker: an interrupted older run

    def build(staging: Path) -> toolkit.Toolkit:
        fake_nvcc(staging / "bin")
        return fake_toolkit(final)

    base.build_cached(final, build)
    assert not (final / "bin" / "half-copied").exists()
    marker = final / base.MARKER
    data = json.loads(marker.read_text())
    data["format"] = base.ASSEMBLY_FORMAT - 1
    marker.write_text(json.dumps(data))
    assert base._cached(final) is None  # an older assembly format is rebuilt
    (final / "bin" / "nvcc").unlink()
    marker.write_text(json.dumps({**data, "format": base.ASSEMBLY_FORMAT}))
    assert base._cached(final) is None  # nvcc gone: not usable


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "pypi-13.0"

    def build(staging: Path) -> toolkit.Toolkit:
        touch(staging / "bin" / "nvcc")
        raise NotAvailable("no network", fix="retry")

    with pytest.raises(NotAvailable):
        base.build_cached(final, build)
    assert not final.exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
