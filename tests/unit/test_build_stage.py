"""The build stage driven through a stand-in pip (progress, labels, resume, Ctrl-C,
failures, ccache, orphans of a killed run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_build_workcopy import src_tree

from vllm_matrix.infra.config import Cell, Options
from vllm_matrix.infra.results import FAIL, PASS
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages import compile as build
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.env.fixups import Fixup, Fixups
from vllm_matrix.stages.toolkit import Toolkit

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
    assert said[0].startswith("build: starting")
    assert said[-2].startswith("build all targets: 5/5 (100%)")
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
        if msg.startswith("build all targets: 3/5"):
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
