"""The target: --arch / --gpu / --driver-cuda / --env PREFIX (pipeline/target.py,
knowledge/gpus.py, stages/env/envprefix.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.commands import doctor
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge import gpus
from vllm_matrix.pipeline import target
from vllm_matrix.stages.env import envprefix

NO_GPU = gpuinfo.GpuReport((), None, "recorded: none")
H200 = gpuinfo.GpuReport((gpuinfo.Gpu("NVIDIA H200", "9.0", "580"),), "13.0", "recorded")


def test_gpu_names_match_as_people_and_nvidia_smi_write_them() -> None:
    for name in ("RTX 5090", "NVIDIA GeForce RTX 5090", "rtx5090", "GeForce RTX 5090"):
        assert gpus.lookup(name).cc == "12.0"
    assert gpus.lookup("NVIDIA H100 80GB HBM3").cc == "9.0"
    assert all(m.source.startswith("https://") for m in gpus.load())
    with pytest.raises(ConfigError, match="not a GPU name") as e:
        gpus.lookup("RTX 9999")
    assert "--arch" in (e.value.fix or "")


def test_described_target_wins_and_none_is_an_error_naming_the_ways() -> None:
    t = target.resolve(gpu="RTX 5090", driver_cuda="12.8", detect=lambda: H200)
    assert t.archs == ("12.0",) and t.driver_cuda == "12.8" and "RTX 5090" in t.arch_from
    assert target.resolve(arch="12.0", detect=lambda: H200).archs == ("12.0",)
    here = target.resolve(detect=lambda: H200)
    assert here.archs == ("9.0a",) and here.driver_cuda == "13.0" and "H200" in here.arch_from
    with pytest.raises(ConfigError) as e:
        target.resolve(detect=lambda: NO_GPU)
    assert '--arch 12.0 or --gpu "RTX 5090"' in (e.value.fix or "")
    assert "12.0" in (e.value.fix or "") and "9.0" in (e.value.fix or "")
    assert target.resolve(required=False, detect=lambda: NO_GPU).archs == ()


def pixi_prefix(root: Path) -> Path:
    """A Pixi env as the user of issue 23 has it: Python 3.12, torch 2.6.0+cu124, nvcc 12.4."""
    p = root / "proj" / ".pixi" / "envs" / "default"
    (p / "conda-meta").mkdir(parents=True)
    (p / "bin").mkdir()
    (p / "bin" / "nvcc").write_text("#!/bin/sh\nexit 1\n")  # never run: read from files
    inc = p / "targets" / "x86_64-linux" / "include"
    inc.mkdir(parents=True)
    (inc / "cuda.h").write_text("#define CUDA_VERSION 12040\n")
    t = p / "lib" / "python3.12" / "site-packages" / "torch"
    (t / "lib").mkdir(parents=True)
    (t / "version.py").write_text("__version__ = '2.6.0+cu124'\ncuda: Optional[str] = '12.4'\n")
    (t / "lib" / "libtorch_python.so").write_bytes(b"\0sm_80 sm_90\0")
    return root / "proj"


def test_env_prefix_is_read_from_its_files(tmp_path: Path) -> None:
    pf = envprefix.read_prefix(pixi_prefix(tmp_path))  # a Pixi project root works too
    assert (pf.kind, pf.python, pf.torch, pf.torch_cuda, pf.nvcc) == (
        "pixi",
        "3.12",
        "2.6.0+cu124",
        "12.4",
        "12.4",
    )
    with pytest.raises(ConfigError, match="no such directory"):
        envprefix.read_prefix(tmp_path / "nope")


def test_doctor_on_a_prefix_for_a_5090(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        doctor, "_advise", lambda r, *a: "vLLM 0.9.2 × torch 2.7.0+cu128 × CUDA 12.8"
    )
    pf = envprefix.read_prefix(pixi_prefix(tmp_path))
    t = target.resolve(gpu="RTX 5090", driver_cuda="12.8", detect=lambda: NO_GPU)
    r = doctor.for_prefix(pf, t)
    msgs = [p["message"] for p in r.problems]
    assert any(m.startswith("torch 2.6.0+cu124 has no kernels for sm_120") for m in msgs)
    assert any(m.startswith("nvcc 12.4 cannot target sm_120") for m in msgs)
    assert all("CUDA 12.8" in p["fix"] for p in r.problems)
    # no GPU here and no target named: say how to name it
    r = doctor.for_prefix(pf, target.resolve(required=False, detect=lambda: NO_GPU))
    assert any('--gpu "RTX 5090"' in p["fix"] for p in r.problems)


def test_newest_without_a_target_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vllm_matrix import cli

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(gpuinfo, "detect", lambda: NO_GPU)
    assert cli.main(["newest", "--torch", "2.6.0", "--cuda", "12.4"]) == 2
    err = capsys.readouterr().err
    assert "no target arch" in err and '--gpu "RTX 5090"' in err


def test_release_lines_answer_modelopt_fp8_with_its_dispatch_and_audit() -> None:
    """`release` prints the ModelOpt FP8 answer for the cell's arch and what it rests on:
    the dispatch line (file:line) and the audited object, not the rest of the evidence."""
    from vllm_matrix.commands import target as target_cmd
    from vllm_matrix.infra.results import Finding, StageResult

    gemm = {
        "arch": "12.0",
        "short": "no: cc ≥ 100 goes to cutlass_scaled_mm_sm100",
        "evidence": [
            "cc ≥ 100 → cutlass_scaled_mm_sm100 (csrc/quantization/cutlass_w8a8/"
            "scaled_mm_entry.cu:156)",
            "scaled_mm_sm100_fp8.cu: CUTLASS arch tag Sm100",
            "audited on no GPU, 2 cores (x): scaled_mm_sm100_fp8.cu.o sm_120a: no MMA instruction",
        ],
    }
    pre = StageResult(
        "preflight",
        "pass",
        0.0,
        "ok",
        (Finding("nvcc-arch", "info", "nvcc 12.8 targets sm_120"),),
        details={"modelopt_fp8": gemm["short"] + " [audited object]", "modelopt_fp8_gemm": [gemm]},
    )
    lines = target_cmd.preflight_lines([pre])
    i = lines.index("ModelOpt FP8: no: cc ≥ 100 goes to cutlass_scaled_mm_sm100 [audited object]")
    assert lines[i + 1].endswith("scaled_mm_entry.cu:156)")
    assert lines[i + 2].startswith("  audited on no GPU")
    assert not any("arch tag" in x for x in lines)
