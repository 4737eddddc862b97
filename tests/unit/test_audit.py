"""audit.py without a compiler: its parsing of cuobjdump / readelf output captured from
real runs, the wheel audit on tiny wheels, the smoke helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import need_program
from test_build_wheel import hand_wheel

from vllm_matrix.infra.results import FAIL, PASS
from vllm_matrix.stages import audit
from vllm_matrix.stages.toolkit import Toolkit

# ------------------------------------------------------------------ audit parsing

# Captured: nvcc 12.4 (Debian) `-gencode arch=compute_80,code=sm_80 -gencode
# arch=compute_90,code=compute_90` on a tiny kernel, then cuobjdump 12.4.
LIST_ELF_TINY = "ELF file    1: libk.1.sm_80.cubin\nELF file    2: libk.2.sm_80.cubin\n"
LIST_PTX_TINY = "PTX file    1: libk.1.sm_90.ptx\n"
NO_CODE = "cuobjdump info    : File '/tmp/bw/cu/libp.so' does not contain device code\n"
READELF_TINY = """\

Dynamic section at offset 0xae500 contains 25 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x0000000000000001 (NEEDED)             Shared library: [ld-linux-x86-64.so.2]
 0x000000000000000c (INIT)               0xa000
 0x000000000000001d (RUNPATH)            Library runpath: [$ORIGIN:/opt/x/lib]
"""


# Captured from the canary's wheel (vLLM 0.4.2, nvcc 12.4, TORCH_CUDA_ARCH_LIST=8.0).
LIST_ELF_C = "".join(
    f"ELF file {n:4d}: _C.cpython-311-x86_64-linux-gnu.{n}.sm_80.cubin\n" for n in range(1, 17)
)
LIST_PTX_C = (
    "cuobjdump info    : No PTX file found to extract from "
    "'/tmp/bw/fx/vllm/_C.cpython-311-x86_64-linux-gnu.so'. You may try with -all option.\n"
)
READELF_MOE_C = """\

Dynamic section at offset 0x3eb28 contains 34 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libtorch.so]
 0x0000000000000001 (NEEDED)             Shared library: [libtorch_python.so]
 0x0000000000000001 (NEEDED)             Shared library: [libcudart.so.12]
 0x0000000000000001 (NEEDED)             Shared library: [libtorch_cpu.so]
 0x0000000000000001 (NEEDED)             Shared library: [libtorch_cuda.so]
 0x0000000000000001 (NEEDED)             Shared library: [libc10_cuda.so]
 0x0000000000000001 (NEEDED)             Shared library: [libc10.so]
 0x0000000000000001 (NEEDED)             Shared library: [libstdc++.so.6]
 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x000000000000001d (RUNPATH)            Library runpath: [/lib/intel64:/lib/intel64_win:\
/lib/win-x64:/root/.cache/vllm-matrix/envs/py3.11-torch2.3.0-full/lib/python3.11/site-packages/\
torch/lib:/root/.cache/vllm-matrix/toolkits/debian-12.4/lib64/stubs:\
/root/.cache/vllm-matrix/toolkits/debian-12.4/lib64:]
 0x000000000000000c (INIT)               0x9000
"""


def test_parse_the_canarys_real_output() -> None:
    assert audit.parse_list_elf(LIST_ELF_C) == ("8.0",)
    assert audit.count_entries(LIST_ELF_C) == 16
    assert audit.parse_list_ptx(LIST_PTX_C) == ()
    needed, runpath = audit.parse_readelf(READELF_MOE_C)
    assert needed[:3] == ("libtorch.so", "libtorch_python.so", "libcudart.so.12")
    assert "libc10.so" in needed and len(needed) == 10
    assert runpath[0] == "/lib/intel64" and runpath[-1].endswith("debian-12.4/lib64")
    assert len(runpath) == 6


def test_parse_cuobjdump_lists() -> None:
    assert audit.parse_list_elf(LIST_ELF_TINY) == ("8.0",)
    assert audit.count_entries(LIST_ELF_TINY) == 2
    assert audit.parse_list_ptx(LIST_PTX_TINY) == ("9.0",)
    assert audit.parse_list_elf(NO_CODE) == () and audit.parse_list_ptx(NO_CODE) == ()
    assert audit.parse_list_elf("ELF file    1: x.2.sm_90a.cubin\n") == ("9.0a",)
    assert audit.parse_list_elf("ELF file    7: x.7.sm_120.cubin\n") == ("12.0",)


def test_parse_readelf() -> None:
    needed, runpath = audit.parse_readelf(READELF_TINY)
    assert needed == ("libc.so.6", "ld-linux-x86-64.so.2")
    assert runpath == ("$ORIGIN", "/opt/x/lib")


@pytest.mark.parametrize(
    ("target", "sass", "ptx", "want"),
    [
        ("8.0", ("8.0",), (), ("sass", "8.0")),
        ("8.6", ("8.0",), (), ("sass-compatible", "8.0")),
        ("8.9", ("8.0", "8.6"), (), ("sass-compatible", "8.6")),
        ("9.0", ("8.0",), (), (None, None)),
        ("9.0", ("8.0",), ("8.0",), ("ptx", "8.0")),
        ("8.0", (), ("9.0",), (None, None)),  # PTX only JITs forward
        ("9.0a", ("9.0",), (), (None, None)),  # wgmma kernels need the arch-specific SASS
        ("9.0a", ("9.0a",), (), ("sass", "9.0a")),
        ("9.0", ("9.0a",), (), (None, None)),
        ("12.0f", ("12.0",), (), ("sass", "12.0")),
    ],
)
def test_arch_coverage(
    target: str, sass: tuple[str, ...], ptx: tuple[str, ...], want: tuple[str | None, str | None]
) -> None:
    assert audit.coverage(target, sass, ptx) == want


def fake_tools(tmp: Path, elf: str, ptx: str, readelf: str) -> Toolkit:
    """A toolkit whose cuobjdump prints captured output (readelf stays the real one)."""
    bin_ = tmp / "tk" / "bin"
    bin_.mkdir(parents=True)
    (tmp / "elf.txt").write_text(elf)
    (tmp / "ptx.txt").write_text(ptx)
    (bin_ / "cuobjdump").write_text(
        f'#!/bin/sh\ncase "$1" in --list-elf) cat {tmp}/elf.txt;; *) cat {tmp}/ptx.txt;; esac\n'
    )
    (bin_ / "cuobjdump").chmod(0o755)
    return Toolkit("debian", "12.4", "12.4.131", tmp / "tk", bin_ / "nvcc", ("8.0",), 13, ())


def so_wheel(tmp: Path, version: str = "0.4.2+cu124torch2.3") -> Path:
    elf = Path("/bin/true").read_bytes()  # any ELF file readelf can read
    return hand_wheel(tmp, version, {"vllm/_C.cpython-311-x86_64-linux-gnu.so": elf})


needs_readelf = pytest.mark.usefixtures("have_readelf")


@pytest.fixture
def have_readelf() -> None:
    need_program("readelf", "binutils")


@needs_readelf
def test_audit_passes_with_sass_for_the_target(tmp_path: Path) -> None:
    tk = fake_tools(tmp_path, LIST_ELF_TINY, LIST_PTX_TINY, READELF_TINY)
    r = audit.audit_wheel(so_wheel(tmp_path), tk, ("8.0",))
    assert r.status == PASS, r.findings
    obj = r.details["objects"][0]
    assert obj["sass"] == ["8.0"] and obj["ptx"] == ["9.0"] and obj["device_code"]
    assert r.details["coverage"] == {"vllm/_C.cpython-311-x86_64-linux-gnu.so": {"8.0": "sass:8.0"}}
    assert "SASS 8.0 PTX 9.0" in r.summary


@needs_readelf
def test_audit_fails_without_sass_for_a_target(tmp_path: Path) -> None:
    tk = fake_tools(tmp_path, LIST_ELF_TINY, "", READELF_TINY)
    r = audit.audit_wheel(so_wheel(tmp_path), tk, ("8.0", "9.0"))
    assert r.status == FAIL
    bad = [f for f in r.findings if f.level == "fail"]
    assert len(bad) == 1 and "no SASS or PTX for 9.0" in bad[0].message


@needs_readelf
def test_audit_fails_when_no_object_has_device_code(tmp_path: Path) -> None:
    tk = fake_tools(tmp_path, NO_CODE, NO_CODE, READELF_TINY)
    r = audit.audit_wheel(so_wheel(tmp_path), tk, ("8.0",))
    assert r.status == FAIL and any(f.rule == "device-code" for f in r.findings)


@needs_readelf
def test_audit_checks_the_version_label(tmp_path: Path) -> None:
    tk = fake_tools(tmp_path, LIST_ELF_TINY, "", READELF_TINY)
    w = so_wheel(tmp_path)
    bad = tmp_path / "x" / w.name.replace("0.4.2+cu124torch2.3", "0.4.2+cu121")
    bad.parent.mkdir()
    bad.write_bytes(w.read_bytes())
    r = audit.audit_wheel(bad, tk, ("8.0",))
    assert r.status == FAIL and any(f.rule == "version-label" for f in r.findings)


def test_wheel_info(tmp_path: Path) -> None:
    info = audit.wheel_info(hand_wheel(tmp_path, "0.4.2+cu124torch2.3"))
    assert info.metadata_version == "0.4.2+cu124torch2.3"
    assert info.dist_info == "vllm-0.4.2+cu124torch2.3.dist-info"
    assert info.requires == ("ray>=2.9",)


def test_smoke_json_line() -> None:
    out = textwrap.dedent("""\
        warning: numpy
        SMOKE-JSON {"ok": false, "missing_module": "transformers"}
        """)
    assert audit._json_line(out) == {"ok": False, "missing_module": "transformers"}
    assert audit._json_line("nothing") is None


def test_driver_stub_dir_links_libcuda(tmp_path: Path) -> None:
    stubs = tmp_path / "tk" / "lib64" / "stubs"
    stubs.mkdir(parents=True)
    (stubs / "libcuda.so").write_bytes(b"stub")
    tk = Toolkit("debian", "12.4", "12.4.131", tmp_path / "tk", tmp_path / "n", (), None, ())
    d = audit.driver_stub_dir(tk, tmp_path / "stub")
    assert d is not None and (d / "libcuda.so.1").resolve() == (stubs / "libcuda.so").resolve()
    assert audit.driver_stub_dir(tk, tmp_path / "stub") == d  # re-linking is fine
