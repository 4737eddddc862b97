"""Partial builds (--targets): target parsing, stand-ins, per-target figures, the
setup.py driver, and results that never show a partial build as a wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_matrix import cli
from vllm_matrix.commands.run import build_options
from vllm_matrix.infra import results
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import INTERRUPTED, PASS, SKIP, WARN, StageResult
from vllm_matrix.stages import compile as build
from vllm_matrix.stages.compile import partial


def test_parse_targets() -> None:
    assert build.parse_targets("_C, _C_stable_libtorch,_C") == ("_C", "_C_stable_libtorch")
    assert build.parse_targets("") == () and build.parse_targets(None) == ()
    with pytest.raises(MatrixError, match="not a CMake target name"):
        build.parse_targets("_C;rm -rf")
    assert partial.partial_label(["_C", "_moe_C"]) == "partial: targets _C, _moe_C"


def test_cli_takes_targets_and_no_probe() -> None:
    args = cli.parser().parse_args(
        [
            "run",
            "--env",
            "current",
            "--vllm",
            "0.20.0",
            "--depth",
            "gpu",
            "--targets",
            "_C_stable_libtorch",
            "--no-probe",
        ]
    )
    opts = build_options(args)
    assert opts.targets == ("_C_stable_libtorch",) and opts.probe is False
    assert build_options(cli.parser().parse_args(["run"])).targets == ()


def test_no_front_end_cache_reaches_the_probe_options() -> None:
    parse = cli.parser().parse_args
    assert build_options(parse(["run"])).probe_front_end_cache is True
    args = parse(["run", "--depth", "probe", "--units", "all", "--no-front-end-cache"])
    opts = build_options(args)
    assert opts.probe_front_end_cache is False and opts.probe_units == "all"


# ------------------------------------------------------------------ stand-ins

DEEPGEMM_CMAKE = """\
FetchContent_Populate(deepgemm)
Python_add_library(_deep_gemm_C MODULE WITH_SOABI
  "${deepgemm_SOURCE_DIR}/csrc/python_api.cpp")
target_include_directories(_deep_gemm_C PRIVATE
  "${deepgemm_SOURCE_DIR}/csrc"
  "${deepgemm_SOURCE_DIR}/deep_gemm/include")
install(CODE "file(GLOB X \\"${deepgemm_SOURCE_DIR}/deep_gemm/*.py\\")")
set(Y ${deepgemm_SOURCE_DIR}/${SUB}/x.cu)
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    (t / "cmake" / "external_projects").mkdir(parents=True)
    (t / "cmake" / "external_projects" / "deepgemm.cmake").write_text(DEEPGEMM_CMAKE)
    (t / "cmake" / "external_projects" / "flashmla.cmake").write_text(
        'file(READ "${flashmla_SOURCE_DIR}/flash_mla/flash_mla_interface.py" C)\n'
    )
    (t / "CMakeLists.txt").write_text("project(vllm)\n")
    return t


def test_referenced_paths_are_plain_paths_only(tree: Path) -> None:
    # globs, nested variables and install(CODE) escapes are left out
    assert partial.referenced_paths(tree, "deepgemm") == (
        "csrc",
        "csrc/python_api.cpp",
        "deep_gemm/include",
    )


def test_standin_holds_empty_files_and_dirs_and_defines_nothing(tree: Path, tmp_path: Path) -> None:
    d = partial.make_standin(tree, "deepgemm", tmp_path / "st" / "deepgemm")
    assert (d / "csrc").is_dir() and (d / "deep_gemm" / "include").is_dir()
    assert (d / "csrc" / "python_api.cpp").read_bytes() == b""
    assert partial.STANDIN_MARK in (d / "CMakeLists.txt").read_text()
    again = partial.make_standin(tree, "deepgemm", d)  # made afresh, no leftovers
    assert sorted(p.name for p in again.iterdir()) == ["CMakeLists.txt", "csrc", "deep_gemm"]


def test_only_dependencies_no_chosen_target_needs_are_stood_in(tree: Path, tmp_path: Path) -> None:
    feeds = partial.load()
    assert not feeds.needed("flashmla", ["_C_stable_libtorch"])
    assert feeds.needed("qutlass", ["_C"])  # qutlass compiles into _C for 12.x
    assert feeds.needed("cutlass", ["_C_stable_libtorch"])  # headers of every extension
    assert feeds.needed("something-new", ["_C"])  # unknown: never guessed safe
    assert feeds.needed("flashmla", [])  # a full build needs everything
    names = {
        "deepgemm": "DEEPGEMM_SRC_DIR",
        "flashmla": "FLASH_MLA_SRC_DIR",
        "qutlass": "QUTLASS_SRC_DIR",
        "cutlass": "VLLM_CUTLASS_SRC_DIR",
    }
    got = partial.standins_for(tree, names, ["_C"], tmp_path / "st", feeds)
    assert sorted(got) == ["deepgemm", "flashmla"]
    assert got["flashmla"][1] == "FLASH_MLA_SRC_DIR"
    assert (got["flashmla"][0] / "flash_mla" / "flash_mla_interface.py").is_file()
    assert partial.standins_for(tree, names, [], tmp_path / "st2", feeds) == {}


# ------------------------------------------------------------------ the setup.py driver

FAKE_SETUP = """\
import sys
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

class show(build_ext):
    def run(self):
        print("BUILDING", ",".join(e.name for e in self.extensions), "INTO", self.build_lib)

setup(name="vllm", version="0", cmdclass={"build_ext": show}, ext_modules=[
    Extension("vllm._C", sources=[]),
    Extension("vllm._C_stable_libtorch", sources=[]),
    Extension("vllm.vllm_flash_attn._vllm_fa2_C", sources=[]),
    Extension("vllm.triton_kernels", sources=[]),
])
"""


def _driver(
    tmp_path: Path, targets: str, keep: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "setup.py").write_text(FAKE_SETUP)
    argv = [
        str(a)
        for a in partial.partial_argv(_Env(), build.parse_targets(targets), tmp_path / "o", keep)
    ]
    return subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, check=False, env=dict(os.environ)
    )


class _Env:
    python_exe = Path(sys.executable)


def test_driver_cuts_setup_py_to_the_targets(tmp_path: Path) -> None:
    done = _driver(tmp_path, "_C_stable_libtorch,_vllm_fa2_C")
    assert done.returncode == 0, done.stderr
    assert (
        f"BUILDING vllm._C_stable_libtorch,vllm.vllm_flash_attn._vllm_fa2_C INTO {tmp_path / 'o'}"
        in done.stdout
    )
    assert "partial build of _C_stable_libtorch, _vllm_fa2_C (of _C, " in done.stdout


def test_driver_keeps_the_shipped_keep_targets_the_tree_has(tmp_path: Path) -> None:
    keep = partial.load().keep
    assert "triton_kernels" in keep
    done = _driver(tmp_path, "_C", (*keep, "_not_in_this_tree"))
    assert done.returncode == 0, done.stderr
    assert f"BUILDING vllm._C,vllm.triton_kernels INTO {tmp_path / 'o'}" in done.stdout
    assert "keeping triton_kernels" in done.stdout


def test_driver_refuses_a_target_the_tree_does_not_build(tmp_path: Path) -> None:
    done = _driver(tmp_path, "_C,_moe_C")
    assert done.returncode == 3
    assert (
        "no such extension target: _moe_C; this tree builds: _C, _C_stable_libtorch" in done.stdout
    )


# ------------------------------------------------------------------ results


def _stages(*extra: StageResult) -> list[StageResult]:
    base = [StageResult(s, PASS, 0.0, s) for s in ("source", "facts", "preflight", "toolkit")]
    return base + list(extra)


def test_a_partial_build_is_never_shown_as_a_wheel() -> None:
    cut = {"partial": {"targets": ["_C_stable_libtorch"], "extensions": ["x.so"]}}
    b = StageResult(
        "build", PASS, 0.0, "partial: targets _C_stable_libtorch (not a wheel)", (), cut
    )
    gpu_skip = StageResult("gpu", SKIP, 0.0, "not run: no GPU")
    smoke = StageResult("smoke", PASS, 0.0, "loads")
    v = results.verdict_of(_stages(b, StageResult("audit", PASS, 0.0, "a"), smoke, gpu_skip))
    assert v.verdict == "PASS" and v.depth == "smoke (partial: targets _C_stable_libtorch)"
    assert "not run: no GPU" in v.cause
    g = StageResult("gpu", WARN, 0.0, "ran")
    v = results.verdict_of(_stages(b, StageResult("audit", PASS, 0.0, "a"), smoke, g))
    assert v.depth == "gpu (partial: targets _C_stable_libtorch)"
    stopped = StageResult("build", INTERRUPTED, 0.0, "interrupted", (), {"progress": {}})
    assert "partial" not in results.verdict_of(_stages(stopped)).depth
    full = StageResult("build", PASS, 0.0, "vllm.whl", (), {"wheel": "x.whl"})
    assert results.verdict_of(_stages(full)).depth == "build"


def test_gpu_depth_runs_after_smoke_and_model_after_gpu() -> None:
    from vllm_matrix.pipeline import plan

    names = [s.name for s in plan.PLAN]
    assert names.index("smoke") < names.index("gpu") < names.index("model")
    # each is a depth of its own: --depth gpu stops before the model stage
    assert [s.name for s in plan.cut("gpu")][-2:] == ["smoke", "gpu"]
    assert [s.name for s in plan.cut("model")][-3:] == ["smoke", "gpu", "model"]


def test_a_probe_not_run_is_no_evidence() -> None:
    from vllm_matrix.stages.compile import partial as p

    stopped = StageResult("build", INTERRUPTED, 0.0, "interrupted (Ctrl-C)")
    v = results.verdict_of(_stages(p.probe_skipped(), stopped))
    assert v.verdict == "UNKNOWN" and v.depth == "build"
    ran = StageResult("probe", PASS, 1.0, "14 units, all passed")
    assert results.verdict_of(_stages(ran, stopped)).verdict == "PASS"


def test_a_machine_with_several_gpus_is_one_label() -> None:
    m = {"arch": "x86_64", "cpus": 32, "mem_gib": 251, "gpu": "NVIDIA H200\nNVIDIA H200"}
    assert results.machine_label(m) == "x86_64 32 cores 251 GiB, 2 x NVIDIA H200"


def test_smoke_without_a_driver_loads_against_the_toolkits_libcuda_stub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM 0.20's extensions link libcuda.so.1 (CUTLASS's direct driver calls): on a
    machine with no driver they cannot load at all, which is the machine's lack, not the
    build's. The partial smoke loads them against the toolkit's stub, as the wheel's does,
    and says so; with a driver it leaves the library path alone."""
    from vllm_matrix.stages import audit, gpu
    from vllm_matrix.stages.compile import partial
    from vllm_matrix.stages.env import TorchEnv
    from vllm_matrix.stages.toolkit import Toolkit

    root = tmp_path / "cuda"
    (root / "lib64" / "stubs").mkdir(parents=True)
    (root / "lib64" / "stubs" / "libcuda.so").write_bytes(b"\x7fELF")
    tk = Toolkit("pypi", "13.0", "13.0.88", root, root / "bin/nvcc", ("9.0",), 15, ())
    tv = TorchEnv(
        "3.12", "2.11.0", "full", tmp_path, tmp_path / "python", tmp_path, "2.11.0", "13.0"
    )
    seen: dict[str, object] = {}

    def worker(
        libs: object,
        python: object,
        out: Path,
        log: Path,
        load_only: bool = False,
        env: dict[str, str] | None = None,
    ) -> dict[str, object]:
        seen["env"] = env
        return {"libs": {"x/_C.abi3.so": "loaded"}, "ops": {"cutlass_scaled_mm": True}}

    monkeypatch.setattr(gpu, "run_worker", worker)
    monkeypatch.setattr(audit, "real_driver", lambda: False)
    r = partial.smoke_partial([Path("x/_C.abi3.so")], tv, tk, ["_C"], tmp_path / "logs")
    path = (seen["env"] or {})["LD_LIBRARY_PATH"].split(":")[0]  # type: ignore[index]
    assert (Path(path) / "libcuda.so.1").resolve() == root / "lib64/stubs/libcuda.so"
    assert r.status == results.PASS and [f.rule for f in r.findings] == ["smoke-no-driver"]
    assert "libcuda stub" in r.findings[0].message
    monkeypatch.setattr(audit, "real_driver", lambda: True)
    r = partial.smoke_partial([Path("x/_C.abi3.so")], tv, tk, ["_C"], tmp_path / "logs")
    assert seen["env"] == {} and r.findings == ()
