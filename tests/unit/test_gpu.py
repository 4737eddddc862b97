"""The gpu stage's logic, GPU detection and the audit's sm90a finding, on CPU.

The recorded outputs under tests/unit/device/ are real (see its README). The one test
that needs a GPU runs the worker for real and skips elsewhere with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import need_module, skip_or_fail

from vllm_matrix.commands import doctor
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import results
from vllm_matrix.infra.errors import ToolError
from vllm_matrix.infra.results import FAIL, PASS, SKIP, WARN
from vllm_matrix.stages import audit, gpu, preflight, toolkit
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.model import modelstage
from vllm_matrix.stages.toolkit import Toolkit

DEVICE = Path(__file__).with_name("device")


def _read(name: str) -> str:
    return (DEVICE / name).read_text()


# ------------------------------------------------------------------ GPU detection


def test_parse_recorded_nvidia_smi_query() -> None:
    gpus = gpuinfo.parse_query(_read("nvidia-smi-query.txt"))
    assert gpus == (gpuinfo.Gpu("NVIDIA H200", "9.0", "580.159.04"),) * 2
    assert gpuinfo.parse_banner_cuda(_read("nvidia-smi.txt")) == "13.0"
    rep = gpuinfo.GpuReport(gpus, "13.0", "recorded")
    assert rep.archs == ("9.0a",)  # two GPUs, one arch; Hopper gets the a features
    assert gpuinfo.parse_query("No devices were found\n") == ()


def test_one_gpu_query_names_the_gpus_of_a_result_and_the_model_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-smi is found through the programs registry and run by gpu/info only; a
    result's machine and the model stage take its names."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat {DEVICE / 'nvidia-smi-query.txt'}\n")
    smi.chmod(0o755)
    monkeypatch.setattr(gpuinfo.programs, "find", lambda name: str(smi))
    monkeypatch.setattr(gpuinfo, "_driver_api", lambda: ("13.0", ()))
    assert gpuinfo.names() == ("NVIDIA H200", "NVIDIA H200")
    assert results.machine(gpuinfo.names())["gpu"] == "2 x NVIDIA H200"
    assert modelstage.gpu_name() == "NVIDIA H200"
    assert results.machine(())["gpu"] is None
    src = Path(gpuinfo.__file__).parents[1]
    querying = sorted(
        str(p.relative_to(src)) for p in src.rglob("*.py") if '"nvidia-smi"' in p.read_text()
    )
    assert querying == ["gpu/info.py"]


def test_arch_for_and_driver_api_version() -> None:
    assert [gpuinfo.arch_for(c) for c in ("8.9", "9.0", "12.0")] == ["8.9", "9.0a", "12.0a"]
    assert gpuinfo.cuda_of(13000) == "13.0" and gpuinfo.cuda_of(12080) == "12.8"


def test_a_toolkit_or_torch_newer_than_the_driver_is_refused_with_the_fix() -> None:
    gpus = gpuinfo.parse_query(_read("nvidia-smi-query.txt"))
    old = gpuinfo.GpuReport(gpus, "12.8", "recorded")  # an R570 driver
    problems = gpuinfo.check(old, "13.0", "2.11.0+cu130", "13.0")
    assert [p for p, _ in problems] == [
        "nvcc 13.0 is built for CUDA 13.0, newer than this driver runs (CUDA 12.8)",
        "torch 2.11.0+cu130 is built for CUDA 13.0, newer than this driver runs (CUDA 12.8)",
    ]
    assert "R580 branch or newer" in problems[1][1] and "+cu128 torch" in problems[1][1]
    # The recorded machine: driver CUDA 13.0 runs a cu130 torch and nvcc 13.0.
    ok = gpuinfo.GpuReport(gpus, gpuinfo.parse_banner_cuda(_read("nvidia-smi.txt")), "recorded")
    assert gpuinfo.check(ok, "13.0", "2.11.0+cu130", "13.0") == []
    assert gpuinfo.check(gpuinfo.GpuReport((), None, "none"), "13.0", "x", "13.0") == []


def test_detect_without_nvidia_smi_or_driver_finds_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpuinfo.programs, "find", lambda name: None)
    monkeypatch.setattr(gpuinfo, "_driver_api", lambda: (None, ()))
    rep = gpuinfo.detect()
    assert rep.gpus == () and rep.archs == () and "no GPU" in rep.source


@pytest.fixture
def current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cuda"
    (root / "include").mkdir(parents=True)
    (root / "lib64").mkdir()
    tk = Toolkit("system", "13.0", "13.0.88", root, root / "bin" / "nvcc", ("9.0", "12.0"), 15, ())
    site = tmp_path / "env" / "lib" / "site-packages"
    (site / "torch" / "lib").mkdir(parents=True)
    tv = TorchEnv(
        "3.12",
        "2.11.0",
        "current",
        tmp_path / "env",
        tmp_path / "env/bin/python",
        site,
        "2.11.0+cu130",
        "13.0",
    )
    monkeypatch.setattr(toolkit, "current_toolkit", lambda: tk)
    monkeypatch.setattr(env_mod, "current_env", lambda: tv)
    monkeypatch.setattr(preflight, "detect_host", lambda: preflight.Host(13, {}, None))


@pytest.mark.usefixtures("current")
def test_doctor_current_proposes_the_gpus_arches_and_refuses_an_old_driver() -> None:
    gpus = gpuinfo.parse_query(_read("nvidia-smi-query.txt"))
    r = doctor.for_current((), gpuinfo.GpuReport(gpus, "13.0", "recorded"))
    assert r.gpu["arch list"] == ["9.0a"]
    assert r.gpu["driver CUDA"] == "13.0"
    assert not [p for p in r.problems if "driver" in p["message"]]
    assert "TORCH_CUDA_ARCH_LIST=9.0a" in r.render()
    old = doctor.for_current((), gpuinfo.GpuReport(gpus, "12.8", "recorded"))
    msgs = [p["message"] for p in old.problems]
    assert any("torch 2.11.0+cu130 is built for CUDA 13.0" in m for m in msgs)
    # --arch given: it wins over the GPUs here.
    r2 = doctor.for_current(("12.0a",), gpuinfo.GpuReport(gpus, "13.0", "recorded"))
    assert r2.gpu["arch list"] == ["12.0a"]


# ------------------------------------------------------------------ the audit's sm90a finding


def test_real_sm90a_fp8_gemm_object_has_wgmma_and_no_finding() -> None:
    sass = audit.parse_list_elf(_read("scaled_mm_sm90_fp8.sm90a.list-elf.txt"))
    census = audit.mma_census(_read("scaled_mm_sm90_fp8.sm90a.sass-mma.txt"))
    assert sass == ("9.0a",)
    assert set(census) == {"9.0a"} and census["9.0a"]["QGMMA"] == 416
    assert audit.sm90a_findings("scaled_mm_sm90_fp8.cu.o", ("9.0a", "12.0a"), sass) == []
    assert audit.wgmma_findings([("scaled_mm_sm90_fp8.cu.o", census)]) == []


def test_real_plain_sm90_fp8_gemm_object_is_caught() -> None:
    """The same unit compiled for plain sm_90: 28 kernels, not one MMA instruction
    (CUTLASS guards the wgmma bodies with __CUDA_ARCH_FEAT_SM90_ALL)."""
    sass = audit.parse_list_elf(_read("scaled_mm_sm90_fp8.sm90.list-elf.txt"))
    text = _read("scaled_mm_sm90_fp8.sm90.sass-mma.txt")
    census = audit.mma_census(text)
    assert sass == ("9.0",) and census == {"9.0": {}}
    assert text.count("Function :") == 28
    found = audit.sm90a_findings("scaled_mm_sm90_fp8.cu.o", ("9.0",), sass)
    found += audit.wgmma_findings([("scaled_mm_sm90_fp8.cu.o", census)])
    assert [f.rule for f in found] == ["sm90a", "sm90a"]
    assert all(f.level == "fail" for f in found)
    assert "sm_90 SASS without sm_90a" in found[0].message
    assert "none of the 1 FP8 GEMM objects with 9.0 SASS holds a wgmma (GMMA)" in found[1].message
    assert "(no MMA at all)" in found[1].message
    assert "9.0a" in found[0].fix
    # A build for other arches only is not judged by the Hopper rule.
    assert audit.sm90a_findings("x.so", ("12.0a",), ("12.0a",)) == []


ENTRY_OBJECTS = ("nvfp4_scaled_mm_entry.cu.o", "scaled_mm_c3x_sm90.cu.o", "scaled_mm_entry.cu.o")


def _device_objects() -> list[tuple[str, dict[str, dict[str, int]]]]:
    d = json.loads(_read("fp8-gemm-objects.vllm0.20.0-sm90a_sm120a.json"))
    return [(o["object"], o["mma"]) for o in d["fp8_gemm_objects"]]


def test_real_build_entry_objects_without_mma_are_no_finding() -> None:
    """The tool's own partial build on the GPU machine: entry and dispatch units hold no
    MMA in a correct build. The first rule judged each object alone and failed this build
    (3 false findings); judged together the build passes."""
    objs = _device_objects()
    empty = sorted(n for n, c in objs if "9.0a" in c and not c["9.0a"])
    assert empty == list(ENTRY_OBJECTS)
    assert dict(objs)["scaled_mm_sm90_fp8.cu.o"]["9.0a"]["QGMMA"] == 416
    assert dict(objs)["scaled_mm_sm120_fp8.cu.o"] == {"12.0a": {"QMMA": 1024}}
    assert audit.wgmma_findings(objs) == []


def test_real_build_without_its_wgmma_objects_is_caught() -> None:
    """The same build with every object that holds wgmma taken out (what a plain sm_90
    build leaves): the rule fails it, naming the objects it judged."""
    objs = [
        (n, c)
        for n, c in _device_objects()
        if not any(op.endswith("GMMA") for ops in c.values() for op in ops)
    ]
    found = audit.wgmma_findings(objs)
    assert [f.level for f in found] == ["fail"]
    assert "none of the 3 FP8 GEMM objects with 9.0a SASS" in found[0].message
    assert found[0].evidence == ENTRY_OBJECTS
    # Objects with no Hopper SASS at all (a 12.0a-only build) are not judged by this rule.
    assert audit.wgmma_findings([("scaled_mm_sm120_fp8.cu.o", {"12.0a": {"QMMA": 1}})]) == []


def test_mma_census_streams_and_reads_predicated_instructions() -> None:
    c = audit.MmaCensus()
    for line in [
        "\tcode for sm_120a",
        "        /*0100*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;  /* 0x */",
        "        /*0110*/              @!P0 QMMA.16832.F32.E4M3.E4M3 R4, R8, R12, R4 ; /* 0x */",
        "        /*0120*/                   FFMA R1, R2, R3, R4 ;  /* 0x */",
    ]:
        c.feed(line)
    assert c.counts == {"12.0a": {"HMMA": 1, "QMMA": 1}}


# ------------------------------------------------------------------ the gpu stage's verdicts


def _gemm(**kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "m": 256,
        "k": 4096,
        "n": 4096,
        "out": "bfloat16",
        "bias": False,
        "rel_err": 0.002,
        "torch_rel_err": 0.002,
        "tflops": 600.0,
        "torch_tflops": 620.0,
        "ratio": 0.97,
    }
    return c | kw


def _quant(**kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "op": "static_scaled_fp8_quant",
        "m": 16,
        "k": 4096,
        "max_ulp": 0,
        "mismatch": 0.0,
    }
    return c | kw


def _res(**kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "libs": {"/x/vllm/_C_stable_libtorch.abi3.so": "loaded", "/x/vllm/_C.abi3.so": "loaded"},
        "ops": {
            "static_scaled_fp8_quant": True,
            "dynamic_scaled_fp8_quant": True,
            "cutlass_scaled_mm": True,
        },
        "device": {"name": "NVIDIA H200", "capability": "9.0", "sms": 132},
        "supports_fp8": True,
        "quant": [
            _quant(),
            _quant(op="dynamic_scaled_fp8_quant", scale=0.03, scale_rel_err=0.0),
        ],
        "gemm": [_gemm(), _gemm(out="float16", bias=True, rel_err=0.0004, m=4096, tflops=900.0)],
    }
    return r | kw


def test_judge_passes_a_correct_fast_build() -> None:
    r = gpu.judge(_res())
    assert r.status == PASS and r.findings == ()
    assert "NVIDIA H200 (sm_90)" in r.summary and "900.0 TFLOP/s at M=4096" in r.summary


def test_tolerance_grows_with_k_and_follows_the_output_dtype() -> None:
    # K/32 fast-accumulation steps of 2^-14 each, plus one output ulp.
    assert gpu.gemm_tol(4096, "bfloat16") == 4096 * 2.0**-19 + 2.0**-8
    assert gpu.gemm_tol(14336, "float16") == 14336 * 2.0**-19 + 2.0**-11
    # 0.0105 is within bf16's bound at K=4096 (0.0117) but not fp16's (0.0083).
    assert gpu.judge_gemm(_gemm(rel_err=0.0105)) == []
    bad = gpu.judge_gemm(_gemm(out="float16", rel_err=0.0105))
    assert [f.rule for f in bad] == ["gpu-gemm"] and "> 0.0083" in bad[0].message
    # The same error is fine over K=14336; a wrong scale (x2: 50 %) is not, at any K.
    assert gpu.judge_gemm(_gemm(out="float16", k=14336, rel_err=0.0105)) == []
    assert gpu.judge_gemm(_gemm(k=14336, rel_err=0.5))[0].rule == "gpu-gemm"


def test_the_h200_run_of_the_tools_build_passes() -> None:
    """The worker's JSON from the GPU machine (vLLM 0.20.0's _C + _C_stable_libtorch built
    by the tool for 9.0a;12.0a, run on an H200): 48 GEMM and 16 quantization cases."""
    res = json.loads(_read("gpu-worker.vllm0.20.0-h200.json"))
    assert len(res["gemm"]) == 48 and len(res["quant"]) == 16
    r = gpu.judge(res, ("_C", "_C_stable_libtorch"))
    assert r.status == PASS, r.findings
    worst = max(c["rel_err"] / gpu.gemm_tol(c["k"], c["out"]) for c in res["gemm"])
    assert 0.5 < worst < 0.7  # measured: 0.60 of the bound at worst
    # The first rule (the output's rounding only: 2^-7 bf16, 2^-9 fp16) failed most cases.
    old = {"bfloat16": 2.0**-7, "float16": 2.0**-9}
    assert sum(c["rel_err"] > old[c["out"]] for c in res["gemm"]) == 31


def test_the_pipeline_run_on_the_h200_passes_and_its_summary_names_the_largest_error() -> None:
    """The fourth device run (the whole pipeline, the worker's bias as large as the
    product's spread): the largest error (K=14336) and the case nearest its bound (K=4096)
    are different cases; the summary names both."""
    res = json.loads(_read("gpu-worker.vllm0.20.0-h200-run4.json"))
    assert gpu.judge(res, ("_C", "_C_stable_libtorch")).status == PASS
    line = gpu.summarize(res)
    assert "max rel err 0.011 (cutlass_scaled_mm M=4096 K=14336 N=4096 bfloat16)" in line, line
    assert "at most 0.60 of its bound (cutlass_scaled_mm M=4096 K=4096 N=14336 float16)" in line
    assert "slowest ratio 0.71x" in line


def test_below_half_of_torch_is_a_fail_naming_the_slow_path() -> None:
    r = gpu.judge(_res(gemm=[_gemm(ratio=0.31, tflops=190.0)]))
    assert r.status == FAIL
    assert [f.rule for f in r.findings] == ["gpu-speed"]
    assert "0.31x torch._scaled_mm's 620.0" in r.findings[0].message
    assert "sm_90 needs 9.0a" in r.findings[0].fix


def test_quantization_off_by_more_than_a_step_or_a_wrong_scale_fails() -> None:
    assert gpu.judge_quant(_quant(max_ulp=1, mismatch=0.004)) == []
    assert gpu.judge_quant(_quant(max_ulp=3, mismatch=0.004))[0].rule == "gpu-quant"
    assert gpu.judge_quant(_quant(max_ulp=1, mismatch=0.2))[0].rule == "gpu-quant"
    wrong = _quant(op="dynamic_scaled_fp8_quant", scale=0.5, scale_rel_err=0.01)
    assert "from amax/448" in gpu.judge_quant(wrong)[0].message


def test_a_partial_build_without_c_runs_the_gemm_and_says_what_it_could_not_run() -> None:
    ops = {
        "static_scaled_fp8_quant": False,
        "dynamic_scaled_fp8_quant": False,
        "cutlass_scaled_mm": True,
    }
    r = gpu.judge(_res(ops=ops, quant=[]), ("_C_stable_libtorch",))
    assert r.status == WARN
    assert "(partial: targets _C_stable_libtorch)" in r.findings[0].message


def test_errors_loads_and_missing_gemm_fail() -> None:
    r = gpu.judge(_res(gemm=[_gemm() | {"error": "RuntimeError: no kernel image"}]))
    assert r.status == FAIL and "no kernel image" in r.findings[0].message
    libs = {"/x/vllm/_C_stable_libtorch.abi3.so": "OSError: undefined symbol: foo"}
    r = gpu.judge(_res(libs=libs))
    assert r.status == FAIL and r.findings[0].rule == "gpu-load"
    no_mm = {"static_scaled_fp8_quant": True, "dynamic_scaled_fp8_quant": True}
    assert gpu.judge(_res(ops=no_mm, gemm=[])).status == FAIL
    assert gpu.judge({"error": "Traceback ...\nImportError: torch"}).status == FAIL


def test_no_gpu_is_a_skip_not_a_failure(tmp_path: Path) -> None:
    tv = TorchEnv(
        "3.12", "2.11.0", "current", tmp_path, Path(sys.executable), tmp_path, "2.11.0", "13.0"
    )
    r = gpu.run_stage([tmp_path / "x.so"], tv, tmp_path, (), gpuinfo.GpuReport((), None, "none"))
    assert r.status == SKIP and r.summary == gpu.NO_GPU == "not run: no GPU"
    assert gpu.judge(_res(device=None)).status == SKIP
    one = gpuinfo.GpuReport((gpuinfo.Gpu("NVIDIA H200", "9.0", "580"),), "13.0", "x")
    r = gpu.run_stage([], tv, tmp_path, (), one)
    assert r.status == SKIP and "no built extensions" in r.summary


def test_table_lists_every_gemm_case() -> None:
    rows = gpu.table(_res())
    assert len(rows) == 2 + 2 and rows[3].startswith("| 4096 | 4096 | 4096 | float16 | yes |")


def _gpu_here() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "no torch in this interpreter"
    import torch

    if not torch.cuda.is_available():
        return "no GPU here (torch.cuda.is_available() is false)"
    return None


def test_worker_on_a_real_gpu(tmp_path: Path) -> None:
    """The worker itself, on this machine's GPU, with torch's own ops standing in for no
    extension: it must load nothing, find no vLLM ops, and say so (the real run is the
    gpu stage after a --targets build: reports/device)."""
    why = _gpu_here()
    if why:
        skip_or_fail(why, machine=True)
    out = tmp_path / "w.json"
    res = gpu.run_worker([], sys.executable, out, tmp_path / "w.log")
    assert res["device"]["capability"] and res["ops"]["cutlass_scaled_mm"] is False
    assert json.loads(out.read_text()) == res
    assert shutil.which("nvidia-smi") is None or gpuinfo.detect().gpus


def test_worker_loads_nothing_and_finds_no_ops_without_extensions(tmp_path: Path) -> None:
    """The worker's load path on CPU (the smoke of a partial build uses it)."""
    need_module("torch", "the [model] extra: the worker imports it")
    res = gpu.run_worker([], sys.executable, tmp_path / "w.json", tmp_path / "w.log", True)
    assert "error" not in res and res["device"] is None
    assert res["ops"] == dict.fromkeys(
        ("static_scaled_fp8_quant", "dynamic_scaled_fp8_quant", "cutlass_scaled_mm"), False
    )
    bad = gpu.run_worker(
        [tmp_path / "nope.so"], sys.executable, tmp_path / "b.json", tmp_path / "b.log", True
    )
    assert bad["libs"][str(tmp_path / "nope.so")].startswith("OSError")


def test_a_full_wheels_fp8_extensions_are_unpacked_for_the_stage(tmp_path: Path) -> None:
    import zipfile

    whl = tmp_path / "vllm-0.20.0+cu130torch2.11-cp38-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for n in (
            "vllm/_C.abi3.so",
            "vllm/_C_stable_libtorch.abi3.so",
            "vllm/_moe_C.abi3.so",
            "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so",
            "vllm/__init__.py",
        ):
            zf.writestr(n, b"x")
    got = gpu.wheel_extensions(whl, tmp_path / "out")
    assert [p.name for p in got] == ["_C.abi3.so", "_C_stable_libtorch.abi3.so"]
    assert gpu.wheel_extensions(whl, tmp_path / "out") == got  # made afresh


def test_a_gemm_case_without_torchs_figure_is_a_warning() -> None:
    c = _gemm(torch_error="RuntimeError: cuBLASLt")
    for k in ("ratio", "torch_tflops", "torch_rel_err"):
        c.pop(k)
    found = gpu.judge_gemm(c)
    assert [f.level for f in found] == ["warn"] and "cuBLASLt" in found[0].message
    assert gpu.judge(_res(gemm=[c])).status == WARN


def _fake_cuobjdump(tmp_path: Path, body: str, text: str = "") -> str:
    """--dump-sass prints ``body``, --list-text ``text``."""
    tool = tmp_path / "cuobjdump"
    tool.write_text(
        "#!/bin/sh\nif [ \"$1\" = --list-text ]; then\ncat <<'END'\n"
        + text
        + "\nEND\nelse\ncat <<'END'\n"
        + body
        + "\nEND\nfi\n"
    )
    tool.chmod(0o755)
    return str(tool)


def test_sass_census_refuses_a_dump_without_instructions(tmp_path: Path) -> None:
    """cuobjdump without nvdisasm beside it prints the sections' headers and no SASS, and
    exits 0: a count of zero MMA there is no evidence of "no MMA"."""
    headers_only = "\n\tcode for sm_120a\n\t\tFunction : _Z6kernelv\n\t.headerflags @EF_CUDA_SM120"
    kernel = "SASS text section 1 : x-_Z6kernelv.sm_120a.elf.bin"
    with pytest.raises(ToolError, match="nvdisasm"):
        audit.sass_census(tmp_path / "x.cu.o", _fake_cuobjdump(tmp_path, headers_only, kernel))
    disassembled = headers_only + (
        "\n        /*0000*/                   QMMA.16832.F32.E4M3.E4M3 R4, R8, R12, R4 ;"
        "\n        /*0010*/                   EXIT ;"
    )
    census = audit.sass_census(tmp_path / "x.cu.o", _fake_cuobjdump(tmp_path, disassembled, kernel))
    assert census == {"12.0a": {"QMMA": 1}}


def test_sass_census_takes_a_cubin_without_kernels(tmp_path: Path) -> None:
    """Issue 24's H100 hold: vLLM 0.20.0's nvfp4_scaled_mm_entry.cu.o has an sm_90a cubin
    with no kernel (host code only): its dump is a bare header, and --list-text lists no
    text section. That is no MMA, not a failed disassembly."""
    bare = "\nFatbin elf code:\n================\narch = sm_90a\n\n\tcode for sm_90a\n"
    census = audit.sass_census(tmp_path / "x.cu.o", _fake_cuobjdump(tmp_path, bare, ""))
    assert census == {"9.0a": {}}
    two = bare + "\n\tcode for sm_120a\n"  # one arch empty, the other undisassembled
    kernel = "SASS text section 1 : x-_Z6kernelv.sm_120a.elf.bin"
    with pytest.raises(ToolError, match=r"for 12\.0a in"):
        audit.sass_census(tmp_path / "x.cu.o", _fake_cuobjdump(tmp_path, two, kernel))


def test_the_h100_run_compares_with_torch_fast_accum_too() -> None:
    """Issue 26 item 4, issue 24's H100 run: every case also timed against
    torch._scaled_mm(use_fast_accum=True); the summary gives both medians."""
    res = json.loads(_read("gpu-worker.vllm0.20.0-h100-issue24.json"))
    assert all("ratio_fast" in c for c in res["gemm"])
    assert gpu.judge(res, ("_C", "_C_stable_libtorch")).status == PASS
    line = gpu.summarize(res)
    assert "median ratio 1.06x torch._scaled_mm (default), 1.05x with use_fast_accum=True" in line
