"""The version-label rewrite on tiny real wheels."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import skip_or_fail

from vllm_matrix.stages.compile import wheel
from vllm_matrix.stages.compile.wheel import WheelName, local_label, relabel_wheel

# ------------------------------------------------------------------ wheels


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def hand_wheel(out: Path, version: str, files: dict[str, bytes] | None = None) -> Path:
    """A wheel laid out as bdist_wheel writes it (used where setuptools cannot build)."""
    files = files or {"vllm/__init__.py": b"__version__ = '0.4.2'\n"}
    info = f"vllm-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\nRequires-Dist: ray>=2.9\n\n"
    body = dict(files)
    body[f"{info}/METADATA"] = (meta + "A description.\nVersion: not-a-header\n").encode()
    body[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-x\n"
    rows = [[n, record_hash(d), str(len(d))] for n, d in body.items()]
    rows.append([f"{info}/RECORD", "", ""])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    body[f"{info}/RECORD"] = buf.getvalue().encode()
    path = out / f"vllm-{version}-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in body.items():
            zi = zipfile.ZipInfo(name, (2024, 5, 1, 12, 0, 0))
            zi.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            zf.writestr(zi, data)
    return path


def setuptools_wheel(tmp: Path) -> Path | None:
    """A tiny wheel built by setuptools with this interpreter, or None where it cannot
    (setuptools < 70.1 without the wheel package has no bdist_wheel)."""
    proj = tmp / "proj"
    (proj / "tinypkg").mkdir(parents=True)
    (proj / "tinypkg" / "__init__.py").write_text("X = 1\n")
    (proj / "tinypkg" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(proj / "tinypkg" / "tool.sh", 0o755)
    (proj / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='tiny-pkg', version='1.2.3+cu121', packages=['tinypkg'],\n"
        "      package_data={'tinypkg': ['tool.sh']})\n"
    )
    out = tmp / "wh"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
         "--no-index", "-q", str(proj), "-w", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wheels = sorted(out.glob("*.whl")) if r.returncode == 0 else []
    return wheels[0] if wheels else None


def check_wheel(path: Path) -> dict[str, str]:
    """RECORD lists every member with a correct hash and size; returns METADATA headers."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        infos = {n.split("/")[0] for n in names if ".dist-info/" in n}
        assert len(infos) == 1
        info = infos.pop()
        record = list(csv.reader(io.StringIO(zf.read(f"{info}/RECORD").decode())))
        assert sorted(r[0] for r in record) == sorted(names)
        for name, digest, size in record:
            if name.endswith("RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(name)
            assert digest == record_hash(data) and int(size) == len(data), name
        assert names[-1] == f"{info}/RECORD"
        head = zf.read(f"{info}/METADATA").decode().partition("\n\n")[0]
    return dict(line.split(": ", 1) for line in head.splitlines())


def test_local_label() -> None:
    assert local_label("12.4", "2.3.0+cu121") == "cu124torch2.3"
    assert local_label("13.0", "2.10.0") == "cu130torch2.10"


def test_relabel_replaces_vllms_own_label(tmp_path: Path) -> None:
    src = hand_wheel(tmp_path, "0.4.2+cu124")
    dist = tmp_path / "dist"
    out = relabel_wheel(src, "cu124torch2.3", dist)
    assert out.name == "vllm-0.4.2+cu124torch2.3-cp311-cp311-linux_x86_64.whl"
    headers = check_wheel(out)
    assert headers["Version"] == "0.4.2+cu124torch2.3"
    assert headers["Requires-Dist"] == "ray>=2.9"
    with zipfile.ZipFile(out) as zf:
        # only the header changed, not a body line that looks like one
        meta = zf.read("vllm-0.4.2+cu124torch2.3.dist-info/METADATA").decode()
        assert "Version: not-a-header" in meta
        assert zf.read("vllm/__init__.py") == b"__version__ = '0.4.2'\n"
    assert [p.name for p in dist.iterdir()] == [out.name]  # no temp file left


def test_relabel_keeps_modes_and_is_idempotent(tmp_path: Path) -> None:
    src = hand_wheel(tmp_path, "0.4.2", {"vllm/_C.so": b"\x7fELF fake", "vllm/a.py": b""})
    once = relabel_wheel(src, "cu124torch2.3", tmp_path / "d1")
    twice = relabel_wheel(once, "cu124torch2.3", tmp_path / "d2")
    assert once.name == twice.name
    with zipfile.ZipFile(twice) as zf:
        assert zf.getinfo("vllm/_C.so").external_attr >> 16 == 0o755
    check_wheel(twice)


def test_relabel_a_setuptools_built_wheel_and_install_it(tmp_path: Path) -> None:
    src = setuptools_wheel(tmp_path)
    if src is None:
        skip_or_fail("this interpreter's setuptools cannot build wheels offline (no bdist_wheel)")
    out = relabel_wheel(src, "cu124torch2.3", tmp_path / "dist")
    assert out.name.startswith("tiny_pkg-1.2.3+cu124torch2.3-")
    assert check_wheel(out)["Version"] == "1.2.3+cu124torch2.3"
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(out)],
        check=True,
    )  # fmt: skip
    assert (target / "tiny_pkg-1.2.3+cu124torch2.3.dist-info").is_dir()
    assert os.access(target / "tinypkg" / "tool.sh", os.X_OK)


def test_pip_accepts_the_relabelled_wheel(tmp_path: Path) -> None:
    """pip checks that the .dist-info name and METADATA agree with the file name."""
    out = relabel_wheel(hand_wheel(tmp_path, "0.4.2+cu124"), "cu124torch2.3", tmp_path / "d")
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--ignore-requires-python", "--target", str(target), str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if "is not a supported wheel on this platform" in r.stderr:
        skip_or_fail("wheel tag cp311 linux_x86_64 not installable here", machine=True)
    assert r.returncode == 0, r.stderr
    assert (target / "vllm-0.4.2+cu124torch2.3.dist-info" / "METADATA").is_file()


def test_wheel_name_parse() -> None:
    w = WheelName.parse("vllm-0.4.2+cu124-1-cp311-cp311-linux_x86_64.whl")
    assert (w.name, w.version, w.build) == ("vllm", "0.4.2+cu124", "1")
    assert w.tags == "cp311-cp311-linux_x86_64"
    assert w.filename() == "vllm-0.4.2+cu124-1-cp311-cp311-linux_x86_64.whl"
    with pytest.raises(ValueError):
        WheelName.parse("vllm.tar.gz")


def test_stale_partials_of_dead_processes_are_cleared(tmp_path: Path) -> None:
    dead = tmp_path / ".vllm-0.4.2+x-cp311.whl.999999999.partial"
    alive = tmp_path / f".vllm-0.4.2+x-cp311.whl.{os.getpid()}.partial"
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    assert wheel._clear_partials(tmp_path) == [dead.name]
    assert alive.exists()
