"""build.py and audit.py without a compiler: pin neutralising on fixture trees, job
sizing from fake meminfo, ninja progress + ETA, the version-label rewrite on tiny real
wheels, the build stage driven through a stand-in pip, and the audit's parsing of
cuobjdump / readelf output captured from real runs."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import need_program, skip_or_fail

from vllm_matrix.infra.config import Cell, Options
from vllm_matrix.infra.results import FAIL, PASS
from vllm_matrix.stages import audit, build
from vllm_matrix.stages.build import (
    NinjaProgress,
    PinChange,
    WheelName,
    local_label,
    mem_available_gib,
    neutralise_pins,
    plan_jobs,
    prepare_work_copy,
    relabel_wheel,
)
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.fixups import Fixup, Fixups
from vllm_matrix.stages.source import SourceTree
from vllm_matrix.stages.toolkit import Toolkit

# ------------------------------------------------------------------ pins

REQ_CUDA_042 = """\
# Common dependencies
-r requirements-common.txt

# Dependencies for NVIDIA GPUs
ray >= 2.9
nvidia-ml-py # for pynvml package
vllm-nccl-cu12>=2.18,<2.19  # for downloading nccl library
torch == 2.3.0
xformers == 0.0.26.post1  # Requires PyTorch 2.3.0
"""
REQ_COMMON = """\
cmake >= 3.21
outlines == 0.0.34 # Requires torch >= 2.1.0
uvicorn[standard]
torch-memory-saver
"""
REQ_CUDA_085 = """\
-r common.txt
numba == 0.61.2; python_version > '3.9'
ray[cgraph]>=2.43.0, !=2.44.* # Ray Compiled Graph
torch==2.6.0
torchaudio==2.6.0
# These must be updated alongside torch
torchvision==0.21.0 # Required for phi3v processor.
xformers==0.0.29.post2; platform_system == 'Linux' and platform_machine == 'x86_64'
"""
PYPROJECT_MULTI = """\
[build-system]
# Should be mirrored in requirements-build.txt
requires = [
    "cmake>=3.26",
    "ninja",
    "packaging",
    "setuptools>=61",
    "setuptools-scm>=8.0",
    "torch == 2.6.0",  # the pin
    "wheel",
    "jinja2",
]
build-backend = "setuptools.build_meta"

[project]
name = "vllm"
dynamic = ["version", "dependencies"]

[tool.ruff]
line-length = 80
"""
PYPROJECT_INLINE = """\
[build-system]
requires = ["cmake>=3.21", "Torch==2.3.0", 'uvicorn[standard]', "wheel"]

[project]
name = "x"
dependencies = ["torchvision>=0.18", "numpy"]
"""


def tree_of(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_pins_removed_from_0_4_style_requirement_files(tmp_path: Path) -> None:
    t = tree_of(
        tmp_path,
        {
            "requirements-cuda.txt": REQ_CUDA_042,
            "requirements-common.txt": REQ_COMMON,
            "pyproject.toml": PYPROJECT_INLINE,
        },
    )
    changes = neutralise_pins(t)
    assert PinChange("requirements-cuda.txt", 8, "torch == 2.3.0") in changes
    assert {c.removed for c in changes} == {
        "torch == 2.3.0",
        "xformers == 0.0.26.post1  # Requires PyTorch 2.3.0",
        "Torch==2.3.0",
        "torchvision>=0.18",
    }
    cuda = (t / "requirements-cuda.txt").read_text()
    assert "torch" not in cuda and "xformers" not in cuda and "vllm-nccl-cu12" in cuda
    # only the named projects go (use_existing_torch.py would also drop outlines)
    assert (t / "requirements-common.txt").read_text() == REQ_COMMON
    data = tomllib.loads((t / "pyproject.toml").read_text())
    assert data["build-system"]["requires"] == ["cmake>=3.21", "uvicorn[standard]", "wheel"]
    assert data["project"]["dependencies"] == ["numpy"]


def test_pins_removed_from_requirements_dir_and_multiline_pyproject(tmp_path: Path) -> None:
    t = tree_of(
        tmp_path,
        {"requirements/cuda.txt": REQ_CUDA_085, "pyproject.toml": PYPROJECT_MULTI},
    )
    changes = neutralise_pins(t)
    assert [(c.file, c.line) for c in changes] == [
        ("requirements/cuda.txt", 4),
        ("requirements/cuda.txt", 5),
        ("requirements/cuda.txt", 7),
        ("requirements/cuda.txt", 8),
        ("pyproject.toml", 9),
    ]
    text = (t / "pyproject.toml").read_text()
    # the whole line (with its comment) went, every other byte stayed
    assert text == PYPROJECT_MULTI.replace('    "torch == 2.6.0",  # the pin\n', "")
    cuda = (t / "requirements/cuda.txt").read_text()
    assert cuda.splitlines() == [
        "-r common.txt",
        "numba == 0.61.2; python_version > '3.9'",
        "ray[cgraph]>=2.43.0, !=2.44.* # Ray Compiled Graph",
        "# These must be updated alongside torch",
    ]


def test_pin_neutralising_is_idempotent(tmp_path: Path) -> None:
    t = tree_of(tmp_path, {"requirements-cuda.txt": REQ_CUDA_042})
    assert neutralise_pins(t)
    before = (t / "requirements-cuda.txt").stat().st_mtime_ns
    assert neutralise_pins(t) == ()
    assert (t / "requirements-cuda.txt").stat().st_mtime_ns == before


def test_requirement_name() -> None:
    assert build.requirement_name("Torch_Audio >= 2") == "torch-audio"
    assert build.requirement_name("# torch") is None
    assert build.requirement_name("-r requirements-common.txt") is None
    assert build.requirement_name("xformers; platform_system == 'Linux'") == "xformers"


# ------------------------------------------------------------------ job sizing

MEMINFO = """\
MemTotal:       24615364 kB
MemFree:        18874440 kB
MemAvailable:   22020096 kB
Buffers:          123456 kB
"""


def test_mem_available_from_meminfo() -> None:
    assert mem_available_gib(MEMINFO) == pytest.approx(21.0, abs=0.01)
    assert mem_available_gib("MemTotal: 1 kB\n") is None


def test_jobs_bounded_by_cores_when_memory_is_plenty() -> None:
    p = plan_jobs(2, mem_available_gib(MEMINFO), 1)
    assert (p.jobs, p.nvcc_threads, p.max_jobs_env) == (2, 1, 2)
    assert p.env() == {"MAX_JOBS": "2", "NVCC_THREADS": "1"}
    assert "2 cores" in p.reason and "21.0 GiB" in p.reason and not p.low_memory


def test_jobs_bounded_by_memory_on_a_big_machine() -> None:
    p = plan_jobs(64, 30.0, 1)
    assert p.jobs == 7  # 30 GiB / 4 GiB per nvcc job
    assert "= 7" in p.reason


def test_low_memory_still_runs_one_job_and_says_so() -> None:
    p = plan_jobs(8, 2.5, 1)
    assert p.jobs == 1 and p.low_memory


def test_several_arches_get_nvcc_threads_and_max_jobs_compensates() -> None:
    p = plan_jobs(16, 100.0, 3)
    assert p.nvcc_threads == 3 and p.jobs == 5
    # vLLM's setup.py runs MAX_JOBS // NVCC_THREADS jobs
    assert p.max_jobs_env == 15 and "divides" in p.reason
    assert plan_jobs(2, 100.0, 3).nvcc_threads == 1


def test_overrides_win_and_memory_is_still_reported() -> None:
    p = plan_jobs(2, 6.0, 1, jobs=4, nvcc_threads=2)
    assert (p.jobs, p.nvcc_threads, p.max_jobs_env) == (4, 2, 8)
    assert "as asked" in p.reason and "warning" in p.reason


# ------------------------------------------------------------------ progress

# What pip -v shows of vLLM 0.4.2's setup.py: one ninja run per extension target.
NINJA_LINES = [
    "-- Build files have been written to: /w/src/build/temp.linux-x86_64-cpython-311",
    "[1/3] Building CUDA object CMakeFiles/_moe_C.dir/csrc/moe/topk_softmax_kernels.cu.o",
    "[2/3] Building CXX object CMakeFiles/_moe_C.dir/csrc/moe/moe_ops.cpp.o",
    "[3/3] Linking CXX shared module /w/src/build/lib.linux-x86_64-cpython-311/vllm/"
    "_moe_C.cpython-311-x86_64-linux-gnu.so",
    "-- Configuring done",
    "[1/4] Building CUDA object CMakeFiles/_C.dir/csrc/cache_kernels.cu.o",
    "[2/4] Building CUDA object CMakeFiles/_C.dir/csrc/attention/attention_kernels.cu.o",
    "[3/4] Building CUDA object CMakeFiles/_C.dir/csrc/pos_encoding_kernels.cu.o",
    "[4/4] Linking CXX shared module /w/src/build/lib/vllm/_C.cpython-311-x86_64-linux-gnu.so",
]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_ninja_progress_percent_eta_and_runs() -> None:
    clock = Clock()
    seen: list[str] = []
    p = NinjaProgress(emit=seen.append, interval=5.0, clock=clock)
    times = [0, 60, 62, 63, 70, 170, 171, 370, 380]
    for t, line in zip(times, NINJA_LINES, strict=True):
        clock.t = t
        p.feed(line)
    assert [(r.target, r.total, r.done) for r in p.runs] == [("_moe_C", 3, 3), ("_C", 4, 4)]
    assert p.steps_run == 7
    # the second run's start is the last non-ninja line before it (t=70)
    assert p.runs[1].started == 70
    assert seen[0] == "build _moe_C: 1/3 (33%), 1m00s in, ETA 2m00s"
    assert "build _C: 1/4 (25%), 1m40s in, ETA 5m00s" in seen
    assert seen[-1] == "build _C: 4/4 (100%), 5m10s in, done"


def test_eta_counts_units_in_flight() -> None:
    run = build.NinjaRun(total=18, done=1, started=0.0, last=600.0, first_done=1)
    assert run.eta() == pytest.approx(600 * 17)
    # 2 jobs: the other unit is about half done -> 1.5 units in 600 s, 16.5 to go
    assert run.eta(jobs=2) == pytest.approx(400 * 16.5)
    done = build.NinjaRun(total=18, done=18, started=0.0, last=600.0)
    assert done.eta(2) == 0.0


def test_ninja_progress_is_throttled() -> None:
    clock = Clock()
    p = NinjaProgress(interval=5.0, clock=clock)
    p.feed("[1/100] Building CUDA object CMakeFiles/_C.dir/a.cu.o")
    emitted = []
    for n in range(2, 100):
        clock.t += 1.0
        emitted.append(p.feed(f"[{n}/100] Building CUDA object CMakeFiles/_C.dir/a.cu.o"))
    assert sum(m is not None for m in emitted) == 19  # one every 5 s of 98 s
    clock.t += 0.1
    assert p.feed("[100/100] Linking CXX shared module x/_C.so") is not None  # last always


def test_no_work_runs_are_counted() -> None:
    p = NinjaProgress()
    p.feed("ninja: no work to do.")
    assert p.no_work == 1 and p.runs == []


def test_fmt_seconds() -> None:
    assert build.fmt_seconds(59.4) == "59s"
    assert build.fmt_seconds(61) == "1m01s"
    assert build.fmt_seconds(3 * 3600 + 120) == "3h02m"


# Shaped like the build.ninja CMake writes for vLLM 0.4.2 (trimmed).
BUILD_NINJA = """\
rule CUDA_COMPILER__vllm_C_unscanned_RelWithDebInfo
  command = nvcc $in
build CMakeFiles/_C.dir/csrc/cache_kernels.cu.o: CUDA_COMPILER___C_unscanned_RelWithDebInfo \
/w/src/csrc/cache_kernels.cu || cmake_object_order_depends_target__C
build CMakeFiles/_C.dir/csrc/ops.cpp.o: CXX_COMPILER___C_unscanned_RelWithDebInfo $
    /w/src/csrc/ops.cpp || cmake_object_order_depends_target__C
build /w/lib/vllm/_C.so: CXX_SHARED_MODULE_LINKER___C_RelWithDebInfo $
    CMakeFiles/_C.dir/csrc/cache_kernels.cu.o CMakeFiles/_C.dir/csrc/ops.cpp.o | /t/libc10.so
build cmake_object_order_depends_target__C: phony || CMakeFiles/_C.dir
build CMakeFiles/_punica_C.dir/p.cu.o: CUDA_COMPILER___punica_C_unscanned_RelWithDebInfo p.cu
build /w/lib/vllm/_punica_C.so: CXX_SHARED_MODULE_LINKER___punica_C_RelWithDebInfo $
    CMakeFiles/_punica_C.dir/p.cu.o
build _C: phony /w/lib/vllm/_C.so
build _punica_C: phony /w/lib/vllm/_punica_C.so
build CMakeFiles/edit_cache.util: CUSTOM_COMMAND
build edit_cache: phony CMakeFiles/edit_cache.util
build default: phony /w/lib/vllm/_C.so
build all: phony /w/lib/vllm/_C.so /w/lib/vllm/_punica_C.so
"""


def test_ninja_work_edges_count_compile_and_link_only(tmp_path: Path) -> None:
    (tmp_path / "build.ninja").write_text(BUILD_NINJA)
    # from vLLM's `default` target: _punica_C (not asked for) is left out
    assert build.ninja_work_edges(tmp_path / "build.ninja") == 3
    without_default = BUILD_NINJA.replace("build default:", "build other:")
    (tmp_path / "build.ninja").write_text(without_default)
    assert build.ninja_work_edges(tmp_path / "build.ninja") == 5  # from `all`
    (tmp_path / "build.ninja").write_text(BUILD_NINJA)
    assert build.ninja_work_outputs(tmp_path / "build.ninja") == {
        "CMakeFiles/_C.dir/csrc/cache_kernels.cu.o",
        "CMakeFiles/_C.dir/csrc/ops.cpp.o",
        "/w/lib/vllm/_C.so",
    }


def test_overall_progress_counts_what_earlier_runs_built(tmp_path: Path) -> None:
    bt = tmp_path / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    (bt / "build.ninja").write_text(BUILD_NINJA)
    overall = build.OverallProgress(tmp_path)
    assert overall() == (0, 3)
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n"
        "0\t9\t0\tCMakeFiles/_C.dir/csrc/ops.cpp.o\tab\n"
        "0\t9\t0\tbuild.ninja\tcd\n"  # cmake's re-run: not a work edge
        "9\t19\t0\tCMakeFiles/_C.dir/csrc/ops.cpp.o\tab\n"  # rebuilt: counted once
    )
    assert overall() == (1, 3)
    # A read that sees fewer entries (ninja logs an edge after printing it; a log being
    # rewritten) never takes the count back.
    (bt / ".ninja_log").write_text("# ninja log v6\n")
    assert overall() == (1, 3)
    assert build.OverallProgress(tmp_path)() == (0, 3)
    assert build.OverallProgress(tmp_path / "nothing")() is None


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
        pytest.skip("wheel tag not installable here")
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
    assert build._clear_partials(tmp_path) == [dead.name]
    assert alive.exists()


# ------------------------------------------------------------------ the work copy


def src_tree(root: Path, version: str = "0.4.2") -> SourceTree:
    tree_of(
        root,
        {
            "PKG-INFO": f"Name: vllm\nVersion: {version}\n",
            "CMakeLists.txt": "project(vllm)\n",
            "setup.py": "raise SystemExit('not run in unit tests')\n",
            "requirements-cuda.txt": REQ_CUDA_042,
            "requirements-common.txt": REQ_COMMON,
            "pyproject.toml": PYPROJECT_INLINE,
        },
    )
    return SourceTree(version, root, f"path {root}")


def test_work_copy_is_made_once_then_reused(tmp_path: Path) -> None:
    tree = src_tree(tmp_path / "cache-tree")
    dst = tmp_path / "work" / "src"
    first = prepare_work_copy(tree, dst, ())
    assert not first.reused and len(first.pins) == 4
    assert "torch" in (tree.root / "requirements-cuda.txt").read_text()  # cache untouched
    (dst / "build" / "temp.x").mkdir(parents=True)
    (dst / "build" / "temp.x" / "obj.o").write_text("compiled")
    again = prepare_work_copy(tree, dst, ())
    assert again.reused and again.pins == first.pins
    assert (dst / "build" / "temp.x" / "obj.o").exists()  # the build dir survives
    clean = prepare_work_copy(tree, dst, (), clean=True)
    assert not clean.reused and clean.remade_because == "a clean build was asked for"
    assert not (dst / "build").exists()


def test_half_made_work_copy_is_discarded(tmp_path: Path) -> None:
    tree = src_tree(tmp_path / "t")
    dst = tmp_path / "work" / "src"
    (tmp_path / "work" / "src.partial").mkdir(parents=True)  # a killed copy
    dst.mkdir()  # a copy without its marker
    wc = prepare_work_copy(tree, dst, ())
    assert not wc.reused and "no marker" in (wc.remade_because or "")
    assert not (tmp_path / "work" / "src.partial").exists()
    assert (dst / build.WORK_MARKER).is_file()


def test_other_source_remakes_the_copy(tmp_path: Path) -> None:
    tree = src_tree(tmp_path / "t")
    dst = tmp_path / "w" / "src"
    prepare_work_copy(tree, dst, ())
    other = SourceTree("0.4.2", tree.root, "sdist other sha256:00")
    assert prepare_work_copy(other, dst, ()).remade_because == (
        "the source or the patch series changed"
    )


# ------------------------------------------------------------------ build_wheel via a stand-in pip

# Stands in for `<env python> -m pip wheel -v --no-build-isolation --no-deps --no-index SRC
# -w OUT`: prints what vLLM's build prints (ninja steps), keeps ninja state in
# SRC/build/temp.*, writes a wheel named as vLLM >= 0.6 names it (its own +cu124 label).
FAKE_PIP = """\
#!{python}
import json, os, sys, time, zipfile
args = sys.argv[1:]
assert args[:3] == ["-m", "pip", "wheel"], args
src, out = args[args.index("-w") - 1], args[args.index("-w") + 1]
mode = open(os.path.join(src, "MODE")).read().strip()
keep = {{k: os.environ.get(k) for k in ("MAX_JOBS", "NVCC_THREADS", "NINJA_STATUS",
        "TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CCACHE_DIR", "CCACHE_DISABLE",
        "CCACHE_BASEDIR", "CCACHE_NOHASHDIR")}}
seen = {{"env": keep, "cwd": os.getcwd(), "argv": args}}
json.dump(seen, open(os.path.join(src, "..", "seen.json"), "w"))
bt = os.path.join(src, "build", "temp.linux-x86_64-cpython-311")
os.makedirs(bt, exist_ok=True)
units = ["a", "b", "c", "d"]
edges = "".join(f"build CMakeFiles/_C.dir/{{u}}.cu.o: CUDA_COMPILER__C x\\n" for u in units)
edges += "build _C.so: CXX_SHARED_MODULE_LINKER___C y\\n"
open(os.path.join(bt, "build.ninja"), "w").write(edges)
log = os.path.join(bt, ".ninja_log")
done = set()
if os.path.exists(log):
    done = {{l.split("\\t")[3] for l in open(log).read().splitlines()[1:]}}
def out_of(u):
    return "_C.so" if u == "link" else f"CMakeFiles/_C.dir/{{u}}.cu.o"
todo = [u for u in units if out_of(u) not in done] + ["link"]
print("-- Build files have been written to: " + bt, flush=True)
if mode == "fail":
    print("[1/5] Building CUDA object CMakeFiles/_C.dir/a.cu.o")
    print("FAILED: CMakeFiles/_C.dir/a.cu.o")
    print("/w/csrc/a.cu(12): error: identifier \\"Float8_e8m0fnu\\" is undefined")
    sys.exit(1)
with open(log, "a") as fh:
    if not done:
        fh.write("# ninja log v6\\n")
    for i, u in enumerate(todo, 1):
        what = f"Building CUDA object CMakeFiles/_C.dir/{{u}}.cu.o"
        if u == "link":
            what = "Linking CXX shared module _C.so"
        print(f"[{{i}}/{{len(todo)}}] {{what}}", flush=True)
        fh.write(f"0\\t1\\t0\\t{{out_of(u)}}\\t0\\n")
        fh.flush()
        if mode == "stop" and i == 2:
            raise KeyboardInterrupt
name = "vllm-0.6.0+cu124"
with zipfile.ZipFile(os.path.join(out, name + "-cp311-cp311-linux_x86_64.whl"), "w") as z:
    z.writestr("vllm/__init__.py", "")
    meta = "Metadata-Version: 2.1\\nName: vllm\\nVersion: 0.6.0+cu124\\n\\n"
    z.writestr(name + ".dist-info/METADATA", meta)
    z.writestr(name + ".dist-info/WHEEL", "Wheel-Version: 1.0\\n")
    z.writestr(name + ".dist-info/RECORD", "")
print("Successfully built vllm")
"""


def fake_stack(tmp: Path, mode: str) -> tuple[Cell, SourceTree, Toolkit, TorchEnv, Fixups]:
    tree = src_tree(tmp / "tree", "0.6.0")
    (tree.root / "MODE").write_text(mode)
    py = tmp / "envbin" / "python"
    py.parent.mkdir()
    py.write_text(FAKE_PIP.format(python=sys.executable))
    py.chmod(0o755)
    tk = Toolkit("debian", "12.4", "12.4.131", tmp / "tk", tmp / "tk/bin/nvcc", ("8.0",), 13, ())
    tv = TorchEnv("3.11", "2.3.0", "full", tmp, py, tmp / "site", "2.3.0+cu121", "12.1")
    fx = Fixups(
        (
            Fixup("CUDA_HOME", str(tk.root), "why"),
            Fixup("TORCH_CUDA_ARCH_LIST", "8.0", "why"),
            Fixup("PATH", str(py.parent), "why"),
        ),
        (),
    )
    cell = Cell("0.6.0", "2.3.0", "12.4", "debian", "3.11", ("8.0",), options=Options(max_jobs=3))
    return cell, tree, tk, tv, fx


def set_mode(tree: SourceTree, work: Path, mode: str) -> None:
    for root in (tree.root, work / "src"):
        if root.exists():
            (root / "MODE").write_text(mode)


def test_build_wheel_drives_pip_and_labels_the_wheel(tmp_path: Path) -> None:
    cell, tree, tk, tv, fx = fake_stack(tmp_path, "ok")
    work, dist = tmp_path / "work", tmp_path / "dist"
    said: list[str] = []
    r = build.build_wheel(cell, tree, tk, tv, fx, work, dist, progress=said.append, series=())
    assert r.status == PASS, r
    wheels = [p.name for p in dist.iterdir()]
    assert wheels == ["vllm-0.6.0+cu124torch2.3-cp311-cp311-linux_x86_64.whl"]
    seen = json.loads((work / "seen.json").read_text())
    assert seen["env"]["MAX_JOBS"] == "3" and seen["env"]["NVCC_THREADS"] == "1"  # cell option
    assert seen["env"]["NINJA_STATUS"] == "[%f/%t] " and seen["env"]["CUDA_HOME"] == str(tk.root)
    assert seen["cwd"] == str(work / "src")
    assert seen["argv"][3:7] == ["-v", "--no-build-isolation", "--no-deps", "--no-index"]
    assert seen["argv"][7] == str(work / "src")
    assert said[0].startswith("build: starting") and said[-2].startswith("build _C: 5/5 (100%)")
    # While ninja runs, the count from its log can trail the [n/N] lines (ninja prints an
    # edge before logging it); the last message is read after ninja exited: complete.
    assert said[-1].startswith("build: pip wheel exited 0 after ")
    assert said[-1].endswith("; all targets 5/5 (100%)")
    d = r.details
    assert d["label"] == "cu124torch2.3" and d["built_as"].startswith("vllm-0.6.0+cu124-")
    assert d["steps"]["steps_run"] == 5 and d["steps"]["work_edges"] == 5
    assert d["jobs"]["jobs"] == 3 and "as asked" in d["jobs"]["reason"]
    assert {c["removed"] for c in d["work_copy"]["pins_removed"]} >= {"torch == 2.3.0"}
    assert not (work / "wheelhouse").exists()
    assert r.log and Path(r.log).read_text().count("[5/5]") == 1


def test_interrupted_build_leaves_no_wheel_and_resumes(tmp_path: Path) -> None:
    cell, tree, tk, tv, fx = fake_stack(tmp_path, "stop")
    work, dist = tmp_path / "work", tmp_path / "dist"
    r = build.build_wheel(cell, tree, tk, tv, fx, work, dist, series=())
    # the stand-in pip died half-way (as after Ctrl-C): a failed stage, nothing in dist/
    assert r.status == FAIL
    assert not dist.exists() or not list(dist.iterdir())
    set_mode(tree, work, "ok")
    r2 = build.build_wheel(cell, tree, tk, tv, fx, work, dist, series=())
    assert r2.status == PASS
    steps = r2.details["steps"]
    assert steps["resumed"] and steps["steps_run"] == 3 and steps["steps_skipped"] == 2
    assert "resumed, 2 steps skipped" in r2.summary
    assert len(list(dist.glob("*.whl"))) == 1


def test_ctrl_c_cleans_up_and_reraises_then_the_next_run_resumes(tmp_path: Path) -> None:
    cell, tree, tk, tv, fx = fake_stack(tmp_path, "ok")
    work, dist = tmp_path / "work", tmp_path / "dist"

    def interrupt(msg: str) -> None:
        if msg.startswith("build _C: 3/5"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build.build_wheel(
            cell, tree, tk, tv, fx, work, dist, progress=interrupt, series=(), interval=0
        )
    assert not (work / "wheelhouse").exists()
    assert not dist.exists() or not list(dist.iterdir())
    r = build.build_wheel(cell, tree, tk, tv, fx, work, dist, series=())
    assert r.status == PASS and r.details["steps"]["resumed"]
    assert r.details["steps"]["steps_skipped"] >= 2


def test_failed_build_is_classified_with_the_tail(tmp_path: Path) -> None:
    cell, tree, tk, tv, fx = fake_stack(tmp_path, "fail")
    r = build.build_wheel(cell, tree, tk, tv, fx, tmp_path / "w", tmp_path / "dist", series=())
    assert r.status == FAIL and "exit 1" in r.summary
    assert "Float8_e8m0fnu" in r.details["tail"]
    assert r.findings and r.findings[-1].level == "fail"
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_ccache_is_used_when_on_path_and_can_be_disabled(tmp_path: Path) -> None:
    cell, tree, tk, tv, fx = fake_stack(tmp_path, "ok")
    fake_ccache = tv.python_exe.parent / "ccache"
    fake_ccache.write_text("#!/bin/sh\nprintf 'cache_miss\\t4\\ndirect_cache_hit\\t1\\n'\n")
    fake_ccache.chmod(0o755)
    work = tmp_path / "w"
    cdir = tmp_path / "cc"
    r = build.build_wheel(
        cell, tree, tk, tv, fx, work, tmp_path / "d", series=(), ccache_dir=cdir, ccache=False
    )
    seen = json.loads((work / "seen.json").read_text())["env"]
    assert seen["CCACHE_DIR"] == str(cdir) and seen["CCACHE_DISABLE"] == "1"
    # shared across work dirs: paths relative to the work copy, cwd not hashed (-g)
    assert seen["CCACHE_BASEDIR"] == str(work / "src") and seen["CCACHE_NOHASHDIR"] == "1"
    assert r.details["ccache"]["enabled"] is False
    r = build.build_wheel(cell, tree, tk, tv, fx, work, tmp_path / "d", series=(), ccache_dir=cdir)
    assert r.details["ccache"]["delta"] == {"direct_cache_hit": 0, "cache_miss": 0}


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


def test_a_rerun_ends_what_a_killed_run_left_in_the_work_copy(tmp_path: Path) -> None:
    cell, tree, tk, tv, fx = fake_stack(tmp_path, "ok")
    work, dist = tmp_path / "work", tmp_path / "dist"
    assert build.build_wheel(cell, tree, tk, tv, fx, work, dist, series=()).status == PASS
    # An orphaned "compiler" still running in the build dir, as kill -9 of a build leaves.
    bdir = work / "src" / "build"
    bdir.mkdir(parents=True, exist_ok=True)
    orphan = subprocess.Popen(["sleep", "60"], cwd=bdir, start_new_session=True)
    said: list[str] = []
    try:
        r = build.build_wheel(cell, tree, tk, tv, fx, work, dist, series=(), progress=said.append)
        assert orphan.wait(timeout=10) == -9
    finally:
        orphan.kill()
    assert r.status == PASS and r.details["ended_orphans"] == [orphan.pid]
    assert said[0].startswith("build: ended 1 processes a killed run left in ")


def test_progress_of_a_stopped_build(tmp_path: Path) -> None:
    bt = tmp_path / "src" / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    (bt / "build.ninja").write_text(BUILD_NINJA)
    p0 = build.progress_of(tmp_path)
    assert p0 is not None and p0.pop("targets")["_C"] == {"edges": 3, "edges_done": 0}
    assert p0 == {"edges_done": 0, "edges": 3, "edge_seconds_done": 0}
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n"
        "0\t90000\t0\tCMakeFiles/_C.dir/csrc/cache_kernels.cu.o\tab\n"
        "0\t500\t0\tbuild.ninja\tcd\n"
    )
    p = build.progress_of(tmp_path)
    assert p is not None and p.pop("targets")["_C"]["edge_seconds"] == 90
    assert p == {
        "edges_done": 1,
        "edges": 3,
        "edge_seconds_done": 90,
    }
    assert build.progress_of(tmp_path / "nothing") is None


def test_progress_projects_only_from_enough_edges(tmp_path: Path) -> None:
    bt = tmp_path / "src" / "build" / "temp.linux-x86_64-cpython-311"
    bt.mkdir(parents=True)
    outs = [f"CMakeFiles/_C.dir/u{i}.cu.o" for i in range(40)]
    (bt / "build.ninja").write_text(
        "".join(f"build {o}: CUDA_COMPILER___C_unscanned x.cu\n" for o in outs)
    )
    (bt / ".ninja_log").write_text(
        "# ninja log v6\n" + "".join(f"0\t10000\t0\t{o}\tab\n" for o in outs[:10])
    )
    p = build.progress_of(tmp_path)
    assert p is not None and p["edges_done"] == 10 and p["edges"] == 40
    assert p["edge_seconds_projected"] == 400
