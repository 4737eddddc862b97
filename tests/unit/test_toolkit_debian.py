"""Fast tests of the debian toolkit provider on small fixture trees (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from toolkitfakes import DEBIAN_PROFILE, HOST_CONFIG_124, touch

from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.toolkit import base, debian

DEPENDS_124 = """nvidia-cuda-dev
  Depends: libcudart12
  Depends: libaccinj64-12.4
  Depends: libnvtoolsext1
  Depends: libnvvm4
  Depends: libcublas12
  Depends: libcu++-dev
  Depends: libcub-dev
  Depends: libthrust-dev
 |Depends: libcuda1
 |Depends: <libcuda.so.1>
    libcuda1
  Depends: <libcuda-12.4-1>
    libcuda1
  Breaks: libcuda1
  Recommends: libgl-dev
"""


def test_debian_unknown_version_lists_what_it_has(tmp_path: Path) -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("debian", "12.8", cache=tmp_path)
    assert "12.4 (trixie)" in str(exc.value.fix) and "11.8 (bookworm)" in str(exc.value.fix)


def test_debian_package_set_from_depends() -> None:
    got = debian.debian_package_set(DEPENDS_124)
    assert got == (
        "nvidia-cuda-toolkit",
        "nvidia-cuda-dev",
        "libcudart12",
        "libnvtoolsext1",
        "libcu++-dev",
        "libcub-dev",
        "libthrust-dev",
    )


def test_debian_package_set_needs_libcu() -> None:
    with pytest.raises(NotAvailable) as exc:
        debian.debian_package_set("  Depends: libcudart12\n")
    assert "libcu++-dev" in exc.value.message


def debian_tree(root: Path) -> Path:
    """The shape of dpkg -x of Debian's CUDA 12.4 packages, with tiny files."""
    usr = root / "usr"
    tk = usr / "lib" / "nvidia-cuda-toolkit"
    lib = usr / "lib" / "x86_64-linux-gnu"
    touch(root / "etc" / "nvcc.profile", DEBIAN_PROFILE)
    touch(usr / "bin" / "nvcc", "#!/bin/sh\nexec /usr/lib/nvidia-cuda-toolkit/bin/nvcc\n", 0o755)
    for tool in ("ptxas", "fatbinary", "nvlink", "cudafe++", "cuobjdump", "bin2c"):
        touch(usr / "bin" / tool, "elf", 0o755)
    (usr / "bin" / "compute-sanitizer").symlink_to(
        "../lib/nvidia-cuda-toolkit/compute-sanitizer/compute-sanitizer"
    )
    touch(tk / "bin" / "nvcc", "real nvcc", 0o755)
    touch(tk / "bin" / "cicc", "cicc", 0o755)
    touch(tk / "bin" / "gcc", "#!/bin/sh\n", 0o755)
    touch(tk / "bin" / "crt" / "link.stub")
    (tk / "bin" / "nvcc.profile").symlink_to("/etc/nvcc.profile")
    touch(tk / "libdevice" / "libdevice.10.bc")
    touch(tk / "compute-sanitizer" / "compute-sanitizer", "cs", 0o755)
    touch(usr / "include" / "cuda_runtime.h")
    touch(usr / "include" / "crt" / "host_config.h", HOST_CONFIG_124)
    touch(usr / "include" / "nv" / "target")
    touch(usr / "include" / "cuda" / "std" / "atomic")
    touch(lib / "libcudart.so.12.4.127")
    (lib / "libcudart.so.12").symlink_to("libcudart.so.12.4.127")
    (lib / "libcudart.so").symlink_to("libcudart.so.12")
    (lib / "libcublas.so").symlink_to("libcublas.so.12")  # libcublas12 is not taken
    touch(lib / "libcudart_static.a")
    touch(lib / "libcudadevrt.a")
    touch(lib / "libcublasLt_static.a", "big")
    touch(lib / "stubs" / "libcublas.so")
    touch(lib / "stubs" / "libcuda.so")
    touch(lib / "pkgconfig" / "cuda.pc", "prefix=/usr\n")
    touch(usr / "share" / "cmake" / "libcudacxx" / "libcudacxx-header-search.cmake")
    touch(usr / "lib" / "cuda" / "include" / "cuda.h")
    return root


def test_arrange_debian_gives_the_standard_layout(tmp_path: Path) -> None:
    extracted = debian_tree(tmp_path / "deb")
    root = tmp_path / "root"
    notes = debian.arrange_debian(extracted, root)
    assert base.layout_problems(root) == []
    assert (root / "bin" / "nvcc").read_text() == "real nvcc"  # not the /usr/bin wrapper
    assert os.access(root / "bin" / "nvcc", os.X_OK)
    assert (root / "nvvm" / "bin" / "cicc").is_file()
    assert (root / "nvvm" / "libdevice" / "libdevice.10.bc").is_file()
    assert (root / "bin" / "crt" / "link.stub").is_file()
    assert not (root / "bin" / "gcc").exists()
    assert (root / "bin" / "compute-sanitizer").resolve() == (
        root / "compute-sanitizer" / "compute-sanitizer"
    ).resolve()
    assert (root / "lib64" / "libcudart.so").resolve().name == "libcudart.so.12.4.127"
    assert not (root / "lib64" / "libcublas.so").is_symlink()  # dangling link removed
    assert (root / "lib64" / "stubs" / "libcublas.so").is_file()  # the stub stays
    assert not (root / "lib64" / "libcublasLt_static.a").exists()
    assert (root / "lib64" / "libcudart_static.a").exists()
    assert not (root / "lib64" / "pkgconfig").exists()
    assert (root / "lib64" / "cmake" / "libcudacxx" / "libcudacxx-header-search.cmake").exists()
    profile = (root / "bin" / "nvcc.profile").read_text()
    assert base.profile_is_relocatable(profile) and "/usr" not in profile
    assert base.parse_max_gcc((root / "include" / "crt" / "host_config.h").read_text()) == 13
    assert any("static archives" in n for n in notes)
    assert any("libcublas.so" in n for n in notes)
