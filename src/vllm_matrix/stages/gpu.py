"""The gpu stage: the built extensions run ModelOpt FP8's ops on this machine's GPU.

Runs only where a GPU is present ("not run: no GPU" elsewhere, a SKIP). The measuring
is done by ``workers/gpu_worker.py`` in the build env's python (torch + the GPU); this module
decides (``judge``), so the verdict logic is tested without a GPU.

Tolerances (each case compares against a reference made from the *same* FP8 inputs:
dequantized, matmul in fp32, so FP8's own rounding is not counted):

- GEMM: ``max|out - ref| / max|ref|``, allowed ``K * 2^-19`` plus one output ulp (2^-8
  for bf16, 2^-11 for fp16): ``gemm_tol``. The products of FP8 values are exact, but
  vLLM's Hopper kernels use CUTLASS's ``*FP8FastAccum`` schedules (0.20.0:
  scaled_mm_sm90_fp8_dispatch.cuh), which leave the sum in the tensor core's own
  accumulator, not promoted to fp32; that accumulator keeps about 14 bits (DeepSeek-V3
  technical report, sec. 3.3.2, measured on H800). One wgmma step adds 32 products, so K
  products take K/32 steps, each off by at most 2^-14 of the running sum: K * 2^-19.
  Measured on an H200 (vLLM 0.20.0 built by the tool, 48 cases, the pipeline's own run):
  max 0.0064 at K=4096 (bound 0.0117 for bf16) and 0.0110 at K=14336 (bound 0.0312);
  torch._scaled_mm, which promotes, stayed within 0.0034. The first rule here allowed
  only the output's rounding (2^-7 / 2^-9) and failed 31 of an earlier run's 48 correct
  cases. What the bound still catches: a wrong scale (50 % and more), a transposed or
  garbage operand (~100 %), a dropped bias (the worker's bias is as large as the
  product's spread: ~40 %).
- quantization: the kernel's FP8 bits against torch's ``(x / scale).clamp(+-448)`` cast:
  at most one representable step apart (a reciprocal-multiply instead of a divide moves a
  value across a rounding boundary), on at most 1% of the elements; the dynamic scale
  within 1e-6 of amax / 448 (both are one fp32 division of the same amax).
- speed: ``cutlass_scaled_mm`` at least half of ``torch._scaled_mm`` (cuBLASLt) on the
  same inputs. A build that fell back to a slow path (sm_90 without the ``a`` features:
  no wgmma) is far below that; the audit's ``sm90a`` finding catches it before the run.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vllm_matrix import workers
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import proc, results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import FAIL, SKIP, Finding, StageResult
from vllm_matrix.stages.env import TorchEnv

WORKER = workers.GPU_WORKER
OUT_ULP = {"bfloat16": 2.0**-8, "float16": 2.0**-11}  # relative, at the largest element
ACCUM_STEP_K = 32  # products per FP8 wgmma step (k of wgmma.m64nNk32 for e4m3)
ACCUM_BITS = 14  # what the FP8 fast accumulator keeps (DeepSeek-V3 report, sec. 3.3.2)
QUANT_MAX_ULP = 1
QUANT_MAX_MISMATCH = 0.01
SCALE_TOL = 1e-6
MIN_RATIO = 0.5
NO_GPU = "not run: no GPU"


def _case_name(c: Mapping[str, Any]) -> str:
    if "op" in c:
        return f"{c['op']} M={c['m']} K={c['k']}"
    bias = "+bias" if c.get("bias") else ""
    return f"cutlass_scaled_mm M={c['m']} K={c['k']} N={c['n']} {c['out']}{bias}"


def gemm_tol(k: int, out_dtype: str) -> float:
    """The largest ``max|out - ref| / max|ref|`` a correct FP8 GEMM with fast accumulation
    over ``k`` products may show (see the module's docstring)."""
    return k / ACCUM_STEP_K * 2.0**-ACCUM_BITS + OUT_ULP[out_dtype]


def _bound_share(c: Mapping[str, Any]) -> float:
    """A GEMM case's error as a share of what it may show (1.0: at the bound)."""
    return float(c["rel_err"]) / gemm_tol(c["k"], c["out"])


def judge_gemm(c: Mapping[str, Any]) -> list[Finding]:
    name = _case_name(c)
    if "error" in c:
        return [Finding("gpu-gemm", "fail", f"{name}: {c['error']}", "read the gpu log")]
    out: list[Finding] = []
    tol = gemm_tol(c["k"], c["out"])
    if c["rel_err"] > tol:
        out.append(
            Finding(
                "gpu-gemm",
                "fail",
                f"{name}: max relative error {c['rel_err']:.3g} > {tol:.3g} "
                f"(torch._scaled_mm: {c.get('torch_rel_err', float('nan')):.3g})",
                "the kernel computes the wrong product: check the build's arch and patches",
            )
        )
    if "ratio" not in c:
        out.append(
            Finding(
                "gpu-speed",
                "warn",
                f"{name}: {c['tflops']} TFLOP/s; no torch._scaled_mm figure to compare "
                f"({c.get('torch_error', 'not measured')})",
                "compare by hand: torch's FP8 GEMM did not run on these inputs",
            )
        )
    elif c["ratio"] < MIN_RATIO:
        out.append(
            Finding(
                "gpu-speed",
                "fail",
                f"{name}: {c['tflops']} TFLOP/s, {c['ratio']:.2f}x torch._scaled_mm's "
                f"{c['torch_tflops']} (below {MIN_RATIO}x)",
                "a slow path: check the audit (sm_90 needs 9.0a for the wgmma kernels)",
            )
        )
    return out


def judge_quant(c: Mapping[str, Any]) -> list[Finding]:
    name = _case_name(c)
    if "error" in c:
        return [Finding("gpu-quant", "fail", f"{name}: {c['error']}", "read the gpu log")]
    out: list[Finding] = []
    if c["max_ulp"] > QUANT_MAX_ULP or c["mismatch"] > QUANT_MAX_MISMATCH:
        out.append(
            Finding(
                "gpu-quant",
                "fail",
                f"{name}: FP8 values up to {c['max_ulp']} steps from the reference on "
                f"{100 * c['mismatch']:.2f}% of elements (allowed {QUANT_MAX_ULP} step, "
                f"{100 * QUANT_MAX_MISMATCH:g}%)",
                "the quantization kernel is wrong for this arch",
            )
        )
    if "scale_rel_err" in c and c["scale_rel_err"] > SCALE_TOL:
        out.append(
            Finding(
                "gpu-quant",
                "fail",
                f"{name}: dynamic scale {c['scale']:.6g} is {c['scale_rel_err']:.3g} from amax/448",
                "the dynamic scale reduction is wrong",
            )
        )
    return out


def judge(res: Mapping[str, Any], targets: Sequence[str] = ()) -> StageResult:
    """The stage's verdict from the worker's JSON."""
    if res.get("error"):
        msg = str(res["error"]).strip().splitlines()[-1]
        return StageResult(
            "gpu",
            FAIL,
            0.0,
            f"the gpu worker failed: {msg}",
            (Finding("gpu", "fail", f"the gpu worker failed: {msg}", "read the gpu log"),),
            dict(res),
        )
    bad_libs = {k: v for k, v in res.get("libs", {}).items() if v != "loaded"}
    findings = [
        Finding("gpu-load", "fail", f"{Path(k).name} does not load: {v}", "read the gpu log")
        for k, v in bad_libs.items()
    ]
    if res.get("device") is None:
        return StageResult("gpu", SKIP, 0.0, NO_GPU, (Finding("gpu", "skip", NO_GPU),), dict(res))
    ops = res.get("ops", {})
    cut = f" (partial: targets {', '.join(targets)})" if targets else ""
    if not ops.get("cutlass_scaled_mm"):
        findings.append(
            Finding(
                "gpu-ops",
                "fail",
                f"no cutlass_scaled_mm registered by the extensions{cut}",
                "build _C_stable_libtorch (vLLM >= 0.20) or _C (older)",
            )
        )
    if not (ops.get("static_scaled_fp8_quant") and ops.get("dynamic_scaled_fp8_quant")):
        findings.append(
            Finding(
                "gpu-ops",
                "warn",
                f"FP8 quantization ops not run: static/dynamic_scaled_fp8_quant are not "
                f"registered by the extensions{cut}",
                "build _C too (csrc/quantization/w8a8/fp8/common.cu)",
            )
        )
    if res.get("supports_fp8") is False:
        findings.append(
            Finding(
                "gpu-ops",
                "fail",
                f"cutlass_scaled_mm_supports_fp8({res['device']['capability']}) is false",
                "build for this GPU's arch with the a suffix (e.g. 9.0a)",
            )
        )
    for c in res.get("quant", []):
        findings += judge_quant(c)
    for c in res.get("gemm", []):
        findings += judge_gemm(c)
    status = results.status_of(findings)
    return StageResult("gpu", status, 0.0, summarize(res), tuple(findings), dict(res))


def summarize(res: Mapping[str, Any]) -> str:
    dev = res.get("device") or {}
    cap = dev.get("capability")
    parts = [f"{dev.get('name', '?')} ({Arch.parse(str(cap)).sm if cap else 'sm_?'})"]
    gemm = [c for c in res.get("gemm", []) if "error" not in c]
    if gemm:
        # The largest error and the one nearest its bound are different cases (the bound
        # grows with K): name both, so "max" is never a smaller number than a case's.
        big_err = max(gemm, key=lambda c: c["rel_err"])
        worst = max(gemm, key=_bound_share)
        slow = min(gemm, key=lambda c: c.get("ratio", float("inf")))
        big = [c for c in gemm if c["m"] == max(c2["m"] for c2 in gemm)]
        top = max(big, key=lambda c: c["tflops"])
        parts.append(
            f"cutlass_scaled_mm {len(gemm)} cases: max rel err {big_err['rel_err']:.2g} "
            f"({_case_name(big_err)}), at most "
            f"{_bound_share(worst):.2f} of its bound "
            f"({_case_name(worst)}), {top['tflops']} TFLOP/s at M={top['m']} "
            f"({top.get('ratio', float('nan')):.2f}x torch), slowest ratio "
            f"{slow.get('ratio', float('nan')):.2f}x ({_case_name(slow)})"
        )
        fast = sorted(c["ratio_fast"] for c in gemm if "ratio_fast" in c)
        if fast:
            plain = sorted(c["ratio"] for c in gemm if "ratio" in c)
            parts.append(
                f"median ratio {_median(plain):.2f}x torch._scaled_mm (default), "
                f"{_median(fast):.2f}x with use_fast_accum=True ({len(fast)} cases)"
            )
    quant = [c for c in res.get("quant", []) if "error" not in c]
    if quant:
        parts.append(
            f"scaled_fp8_quant {len(quant)} cases: max {max(c['max_ulp'] for c in quant)} "
            f"step(s) from the reference"
        )
    return "; ".join(parts)


def _median(xs: Sequence[float]) -> float:
    if not xs:
        return float("nan")
    ys, n = sorted(xs), len(xs)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def table(res: Mapping[str, Any]) -> list[str]:
    """Markdown rows of every GEMM case (for notes and reports)."""
    rows = [
        "| M | K | N | out | bias | rel err | torch rel err | TFLOP/s | torch TFLOP/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res.get("gemm", []):
        if "error" in c:
            rows.append(
                f"| {c['m']} | {c['k']} | {c['n']} | {c['out']} | {c['bias']} | "
                f"error: {c['error'][:60]} | | | | |"
            )
            continue
        rows.append(
            f"| {c['m']} | {c['k']} | {c['n']} | {c['out']} | {'yes' if c['bias'] else 'no'} | "
            f"{c['rel_err']:.2e} | {c.get('torch_rel_err', float('nan')):.2e} | "
            f"{c['tflops']} | {c.get('torch_tflops', '-')} | {c.get('ratio', float('nan')):.2f} |"
        )
    return rows


_FP8_EXTENSION = re.compile(r"^vllm/_C(_stable_libtorch)?\.[^/]*so$")


def wheel_extensions(wheel: Path, dest: Path) -> list[Path]:
    """The extensions that hold the FP8 ops (``vllm/_C*.so``), unpacked from a built
    wheel into ``dest`` (a full build's gpu stage; a partial build hands its own)."""
    out: list[Path] = []
    if dest.exists():
        shutil.rmtree(dest)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if _FP8_EXTENSION.match(name):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                out.append(target)
    return sorted(out)


def run_worker(
    libs: Iterable[Path],
    python: str | Path,
    out_json: Path,
    log: Path,
    load_only: bool = False,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    argv: list[str] = [str(python), str(WORKER), "--json", str(out_json)]
    for lib in libs:
        argv += ["--lib", str(lib)]
    if load_only:
        argv.append("--load-only")
    done = proc.run(argv, log=log, check=False, timeout=1800, env=env)
    try:
        res: dict[str, Any] = json.loads(out_json.read_text())
    except (OSError, ValueError) as exc:
        raise MatrixError(
            f"the gpu worker wrote no result (exit {done.returncode}): {done.output[-500:]}",
            fix=f"read {log}",
        ) from exc
    return res


def run_stage(
    extensions: Sequence[Path],
    tv: TorchEnv,
    logdir: Path,
    targets: Sequence[str] = (),
    report: gpuinfo.GpuReport | None = None,
) -> StageResult:
    report = report if report is not None else gpuinfo.detect()
    if not report.gpus:
        return StageResult(
            "gpu", SKIP, 0.0, NO_GPU, (Finding("gpu", "skip", f"{NO_GPU} ({report.source})"),)
        )
    if not extensions:
        msg = "not run: no built extensions to load (the gpu stage follows a --targets build)"
        return StageResult("gpu", SKIP, 0.0, msg, (Finding("gpu", "skip", msg),))
    res = run_worker(extensions, tv.python_exe, logdir / "gpu.json", logdir / "gpu.log")
    r = judge(res, targets)
    details = r.details | {"gpus": report.to_json()}
    return StageResult(
        r.stage, r.status, r.seconds, r.summary, r.findings, details, str(logdir / "gpu.log")
    )


__all__ = [
    "MIN_RATIO",
    "NO_GPU",
    "gemm_tol",
    "judge",
    "run_stage",
    "run_worker",
    "table",
    "wheel_extensions",
]
