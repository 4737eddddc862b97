"""The `model` stage: an installed vLLM serves the tiny ModelOpt FP8 checkpoint.

`vllm.LLM(model=<fp8 dir>, quantization="modelopt")` and the same model in bf16 each
generate `max_tokens` greedy tokens for the workload's prompts (knowledge/data/model.toml); the FP8
model also scores the bf16 model's tokens teacher-forced (prompt_logprobs), and the
comparison is judged against the tolerance argued in that file. Throughput: one generate()
of many requests per model. Where torch, safetensors and tokenizers import (they do beside
vLLM), vLLM's outputs are also checked against the plain-torch forward of the same
checkpoint (tinymodel.py): that separates "FP8 changed the answers" from "vLLM loaded the
checkpoint wrong".

Each model runs in a worker process of its own (vllm_matrix/workers/model_worker.py, run
by path in the Python that has vLLM; it gets the workload as JSON): two
engines in one process do not give the GPU memory back reliably. Without a GPU the stage is
"not run: no GPU" (SKIP). In the pipeline (`--depth model`) it serves the build's installable
partial dir, in eager and default compile mode, and the FP8 runs collect the evidence that the
built libraries served (ops, trace kernels per library, the CUTLASS log line). First run: issue
24, one H100 (reports/device/issue24-model-run.md).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vllm_matrix import workers
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import proc, results
from vllm_matrix.infra.errors import CommandError, NotAvailable
from vllm_matrix.infra.results import ERROR, FAIL, PASS, SKIP, Finding, StageResult
from vllm_matrix.stages.model import modelcheck

STAGE = "model"
RUN_SCHEMA = "vllm-matrix/model-run"  # what the worker writes (model_worker.RUN_SCHEMA)
EXIT_NO_VLLM = 3  # the worker's exit code when `import vllm` fails (model_worker's)
_ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b[:(]|\bERROR\b")


def gpu_name() -> str | None:
    """The first GPU's name (gpu/info's query), or None where there is none."""
    names = gpuinfo.names()
    return names[0] if names else None


def not_run(reason: str, seconds: float = 0.0) -> StageResult:
    return StageResult(
        STAGE,
        SKIP,
        round(seconds, 2),
        f"not run: {reason}",
        (Finding("model-no-gpu", "skip", f"not run: {reason}"),),
    )


def _outputs(doc: dict[str, Any]) -> list[modelcheck.Output]:
    if doc.get("schema") != RUN_SCHEMA:
        raise ValueError(f"not a model-run document (schema {doc.get('schema')!r})")
    return modelcheck.read_outputs(doc)


def judge(
    bf16: dict[str, Any],
    fp8: dict[str, Any],
    workload: modelcheck.Workload,
    reference: dict[str, dict[str, Any]] | None = None,
    seconds: float = 0.0,
) -> StageResult:
    """The stage's verdict from the workers' documents (and the plain-torch reference's,
    keyed "bf16"/"fp8", each scoring the vLLM run of the same checkpoint)."""
    cmp = modelcheck.compare(_outputs(bf16), _outputs(fp8))
    findings: list[Finding] = []
    for why in modelcheck.within(cmp, workload.fp8_vs_bf16):
        findings.append(
            Finding(
                "fp8-vs-bf16",
                "fail",
                f"ModelOpt FP8 against bf16: {why}",
                fix="compare the checkpoint's scales with vLLM's loader (tinymodel.py's notes); "
                "rerun the gpu stage's FP8 GEMM check",
            )
        )
    details: dict[str, Any] = {
        "fp8_vs_bf16": cmp.to_json(),
        "tolerance": {
            "fp8_vs_bf16": vars(workload.fp8_vs_bf16),
            "vllm_vs_reference": vars(workload.vllm_vs_reference),
        },
        "vllm": fp8.get("vllm"),
        "gpu": fp8.get("gpu"),
        "load_seconds": {"bf16": bf16.get("load_seconds"), "fp8": fp8.get("load_seconds")},
        "throughput": {"bf16": bf16.get("throughput"), "fp8": fp8.get("throughput")},
    }
    for kind, ref in (reference or {}).items():
        vdoc = bf16 if kind == "bf16" else fp8
        rc = modelcheck.compare(_outputs(vdoc), _outputs(ref))
        details[f"{kind}_vllm_vs_reference"] = rc.to_json()
        # FP8's static activation rounding is discontinuous: against the reference the FP8
        # run gets the fp8_vs_bf16 bounds (knowledge/data/model.toml says why).
        tol = workload.vllm_vs_reference if kind == "bf16" else workload.fp8_vs_bf16
        for why in modelcheck.within(rc, tol):
            findings.append(
                Finding(
                    "vllm-vs-reference",
                    "fail",
                    f"vLLM {kind} against the plain-torch forward of the same checkpoint: {why}",
                    fix="vLLM computes this checkpoint differently from its definition: "
                    "check the loader's tensor names and scales (tinymodel.py)",
                )
            )
    tp = {k: (v or {}).get("tokens_per_s") for k, v in details["throughput"].items()}
    summary = (
        f"fp8 vs bf16: top-1 {cmp.forced_top1_agreement}, "
        f"mean |dlogprob| {cmp.forced_mean_abs_dlogprob}, "
        f"identical {cmp.identical_sequences}/{cmp.prompts}; "
        f"tokens/s bf16 {tp.get('bf16')}, fp8 {tp.get('fp8')}"
    )
    status = FAIL if findings else PASS
    return StageResult(STAGE, status, round(seconds, 2), summary, tuple(findings), details)


def write_workload(workload: modelcheck.Workload, path: Path) -> Path:
    """What the worker needs of the workload (knowledge/data/model.toml), as JSON: the
    worker runs in the env that has vLLM, without this package and maybe without tomllib."""
    doc = {
        "prompts": list(workload.prompts),
        "max_tokens": workload.max_tokens,
        "throughput_requests": workload.throughput_requests,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _worker(
    python: str,
    model: Path,
    out: Path,
    workload: Path,
    log: Path | None,
    quantization: str | None,
    reference: Path | None,
    timeout: float,
    on_line: Callable[[str], None] | None,
    *,
    compiled: bool = False,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    argv: list[str] = [python, str(workers.MODEL_WORKER), str(model), str(out)]
    argv += ["--workload", str(workload)]
    argv += ["--quantization", quantization] if quantization else []
    argv += ["--reference", str(reference)] if reference else []
    argv += ["--compile"] if compiled else []
    argv += list(extra)
    proc.run(argv, log=log, timeout=timeout, on_line=on_line, env=env)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


# The ops a ModelOpt FP8 Llama must call in eager mode, and the library kernels it must run:
# without them the stage does not pass (the tokens alone could come from any kernels).
REQUIRED_OPS = ("_C::cutlass_scaled_mm", "_C::static_scaled_fp8_quant")
CUTLASS_LINE = re.compile(r"Selected CutlassFP8ScaledMMLinearKernel for ")
MODES = ("eager", "compile")


def judge_evidence(doc: Mapping[str, Any], libs: Sequence[str]) -> tuple[list[Finding], str]:
    """Did the built libraries serve the FP8 model? (ops counted in the profiler, kernels of
    the trace found in each built .so, the log line that chose the CUTLASS FP8 kernel)."""
    ev = doc.get("evidence") or {}
    mode = "compile" if doc.get("compiled") else "eager"
    found: list[Finding] = []
    if ev.get("error"):
        found.append(
            Finding(
                "kernel-evidence",
                "fail",
                f"{mode}: profiling failed: {ev['error']}",
                "rerun the model stage; read the worker's log",
            )
        )
    ops = ev.get("ops_called") or {}
    owned = {op for names in (ev.get("library_ops") or {}).values() for op in names}
    if mode == "eager":
        for op in REQUIRED_OPS:
            if not ops.get(op):
                found.append(
                    Finding(
                        "kernel-evidence",
                        "fail",
                        f"{mode}: no call into {op} while the FP8 model generated",
                        "check that vLLM imported the built extensions "
                        "(the worker's vllm_file) and chose the CUTLASS kernel",
                    )
                )
            elif owned and op not in owned:
                found.append(
                    Finding(
                        "kernel-evidence",
                        "fail",
                        f"{mode}: {op} is not registered by the built libraries",
                        "the op came from another library: check PYTHONPATH",
                    )
                )
    by_lib = ev.get("kernels_by_library") or {}
    for lib in libs:
        name = Path(lib).name
        if not by_lib.get(name):
            found.append(
                Finding(
                    "kernel-evidence",
                    "fail" if mode == "eager" else "warn",
                    f"{mode}: no kernel of the trace is in {name}",
                    "the built library did not run: read the worker's evidence",
                )
            )
    lines = [ln for ln in ev.get("log_lines") or [] if CUTLASS_LINE.search(ln)]
    if not lines:
        found.append(
            Finding(
                "kernel-evidence",
                "fail",
                f"{mode}: vLLM did not log choosing CutlassFP8ScaledMMLinearKernel",
                "read the worker's log lines: another FP8 kernel served",
            )
        )
    n_ops = sum(v for k, v in ops.items() if not owned or k in owned)
    n_k = {Path(k).name.split(".")[0]: sum(v.values()) for k, v in by_lib.items()}
    called = ", ".join(f"{k.removeprefix('_C::')} {v}" for k, v in ops.items())
    chosen = "CUTLASS FP8 chosen (log)" if lines else "no CUTLASS log line"
    said = (
        f"{mode}: {n_ops} calls into the built ops ({called}); "
        f"kernel launches by library {n_k}; {chosen}"
    )
    return found, said


def combine(
    pairs: Mapping[str, tuple[dict[str, Any], dict[str, Any]]],
    workload: modelcheck.Workload,
    libs: Sequence[str],
    references: Mapping[str, Mapping[str, dict[str, Any]] | None],
    seconds: float,
    attention: str | None = None,
) -> StageResult:
    """The stage over both modes: each mode judged as `judge` does (FP8 vs bf16, each
    against the plain-torch forward), the kernel evidence of each FP8 run, eager vs compile."""
    findings: list[Finding] = []
    details: dict[str, Any] = {"modes": {}, "attention": attention, "libraries": list(libs)}
    parts = []
    for mode, (bf16, fp8) in pairs.items():
        ref = references.get(mode)
        r = judge(bf16, fp8, workload, dict(ref) if ref is not None else None, 0.0)
        findings += [replace_message(f, f"{mode}: {f.message}") for f in r.findings]
        ev_found, ev_said = judge_evidence(fp8, libs)
        findings += ev_found
        d = dict(r.details)
        d["evidence"] = {"bf16": bf16.get("evidence"), "fp8": fp8.get("evidence"), "said": ev_said}
        details["modes"][mode] = d
        tp = d["throughput"]
        parts.append(
            f"{mode}: tokens/s fp8 {(tp.get('fp8') or {}).get('tokens_per_s')} vs bf16 "
            f"{(tp.get('bf16') or {}).get('tokens_per_s')}; fp8 vs bf16 teacher-forced top-1 "
            f"{d['fp8_vs_bf16']['forced_top1_agreement']}, mean |dlogprob| "
            f"{d['fp8_vs_bf16']['forced_mean_abs_dlogprob']}"
            + "".join(
                f"; {k} vs torch reference: prefix agreement "
                f"{d[f'{k}_vllm_vs_reference']['prefix_agreement']}, identical "
                f"{d[f'{k}_vllm_vs_reference']['identical_sequences']}/"
                f"{d[f'{k}_vllm_vs_reference']['prompts']}"
                for k in ("fp8", "bf16")
                if f"{k}_vllm_vs_reference" in d
            )
        )
        details.setdefault("evidence_said", []).append(ev_said)
    if set(MODES) <= set(pairs):
        for kind in (0, 1):
            e, c = pairs["eager"][kind], pairs["compile"][kind]
            cmp = modelcheck.compare(_outputs(e), _outputs(c))
            details[f"{'bf16' if kind == 0 else 'fp8'}_eager_vs_compile"] = cmp.to_json()
    status = results.status_of(findings)
    summary = "; ".join(parts + details.get("evidence_said", []))
    if attention:
        summary = f"{attention}; {summary}"
    return StageResult(STAGE, status, round(seconds, 2), summary, tuple(findings), details)


def replace_message(f: Finding, message: str) -> Finding:
    return Finding(f.rule, f.level, message, f.fix, f.evidence)


def worker_failure(exc: CommandError, seconds: float, log: Path, what: str) -> StageResult:
    """A worker that could not start is the machine's (ERROR, with the fix); vLLM failing
    to load or serve the checkpoint is vLLM's (FAIL, with its first error)."""
    tail = exc.tail or ""
    no_tool = re.search(r"No module named '?vllm_matrix", tail)
    if exc.returncode == EXIT_NO_VLLM or no_tool:
        missing = re.search(r"missing module: (\S+)", tail)
        if no_tool:
            msg = "the worker cannot start: vllm_matrix is not importable in that interpreter"
            fix = (
                "put vllm-matrix's src/ on that interpreter's PYTHONPATH or "
                "pip install vllm-matrix there"
            )
        else:
            name = missing.group(1) if missing else "?"
            msg = f"the worker cannot start: {_first_error(tail)}"
            fix = (
                f"install vLLM's runtime package '{name}' in that interpreter "
                "(on a machine without an index: benchmarks/device/wheels_for_device.sh)"
            )
        return StageResult(
            STAGE,
            ERROR,
            round(seconds, 2),
            f"{what}: {msg}",
            (Finding("model-run", "error", msg, fix),),
            log=str(log),
        )
    first = _first_error(tail) or exc.message
    return StageResult(
        STAGE,
        FAIL,
        round(seconds, 2),
        f"{what}: vLLM did not serve the checkpoint: {first}",
        (
            Finding(
                "model-run",
                "fail",
                f"{what}: {first}",
                f"read {log.name}: vLLM's first error above",
            ),
        ),
        {"tail": tail[-4000:]},
        str(log),
    )


def run(
    bf16_dir: Path,
    fp8_dir: Path,
    work: Path,
    *,
    python: str = sys.executable,
    workload_file: Path = modelcheck.DATA,
    timeout: float = 900,
    echo: Callable[[str], None] | None = None,
    libs: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    attention_backend: str | None = None,
    attention: str | None = None,
    modes: Sequence[str] = MODES,
) -> StageResult:
    """The stage on this machine: both models through vLLM (in `python`) in each mode,
    then judged; with ``libs`` (the built extensions) the FP8 runs collect the evidence."""
    t0 = time.monotonic()
    gpu = gpu_name()
    if gpu is None:
        return not_run("no GPU")
    work.mkdir(parents=True, exist_ok=True)
    log = work / "model.log"
    workload = modelcheck.load(workload_file)
    workload_json = write_workload(workload, work / "workload.json")
    extra: list[str] = []
    if attention_backend:
        extra += ["--attention-backend", attention_backend]
    # _C first: the libraries' ops are told apart by loading them in turn.
    ordered = sorted((str(p) for p in libs), key=lambda x: (Path(x).name != "_C.abi3.so", x))
    if ordered:
        extra += ["--libs", ",".join(ordered)]
    pairs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    refs: dict[str, Mapping[str, dict[str, Any]] | None] = {}
    for mode in modes:
        compiled = mode == "compile"
        what = f"{mode} mode"
        try:
            bf16 = _worker(
                python,
                bf16_dir,
                work / f"bf16-{mode}.json",
                workload_json,
                log,
                None,
                None,
                timeout,
                echo,
                compiled=compiled,
                extra=extra,
                env=env,
            )
            fp8 = _worker(
                python,
                fp8_dir,
                work / f"fp8-{mode}.json",
                workload_json,
                log,
                "modelopt",
                work / f"bf16-{mode}.json",
                timeout,
                echo,
                compiled=compiled,
                extra=[*extra, "--evidence"],
                env=env,
            )
        except CommandError as exc:
            return worker_failure(exc, time.monotonic() - t0, log, what)
        pairs[mode] = (bf16, fp8)
        refs[mode] = _reference(bf16_dir, fp8_dir, bf16, fp8, workload)
    res = combine(pairs, workload, ordered, refs, time.monotonic() - t0, attention)
    return StageResult(
        res.stage,
        res.status,
        res.seconds,
        res.summary,
        res.findings,
        res.details | {"gpu_name": gpu},
        str(log),
    )


def serve_installable(
    installable: results.InstallableDoc | None,
    work: Path,
    *,
    python: str,
    echo: Callable[[str], None] | None = None,
) -> StageResult:
    """The stage in the pipeline: the tiny checkpoint made in ``work``, served by the
    build's ``installable`` (its details; None or empty: nothing to serve) in ``python``,
    the env's interpreter, with the installable first on PYTHONPATH."""
    if not installable:
        return not_run(
            "no installable partial build to serve (run with --targets; for a wheel, "
            "install it and run `vllm-matrix model`)"
        )
    try:
        from vllm_matrix.stages.model import tinymodel
    except ImportError as exc:
        raise NotAvailable(
            f"the model stage makes its checkpoint with torch, safetensors and tokenizers ({exc})",
            fix="pip install -e '.[model]' in the tool's interpreter",
        ) from exc
    tiny = work / "tiny"
    tinymodel.make(tiny)
    dest = Path(installable["path"])
    libs = [dest / e for e in installable["extensions"] if Path(e).name.startswith("_C")]
    path = os.pathsep.join(p for p in (str(dest), os.environ.get("PYTHONPATH", "")) if p)
    return run(
        tiny / "bf16",
        tiny / "fp8",
        work,
        python=python,
        echo=echo,
        libs=libs,
        env={"PYTHONPATH": path},
        attention_backend="TRITON_ATTN" if installable.get("standins") else None,
        attention=str(installable.get("attention") or ""),
        timeout=600,
    )


def _reference(
    bf16_dir: Path,
    fp8_dir: Path,
    bf16: dict[str, Any],
    fp8: dict[str, Any],
    workload: modelcheck.Workload,
) -> dict[str, dict[str, Any]] | None:
    """The plain-torch forward scoring each vLLM run, where tinymodel's packages import."""
    try:
        from vllm_matrix.stages.model import tinymodel
    except ImportError:
        return None
    out = {}
    for kind, d, doc in (("bf16", bf16_dir, bf16), ("fp8", fp8_dir, fp8)):
        vout = _outputs(doc)
        rec = tinymodel.record(d, [o.prompt_ids for o in vout], workload.max_tokens, reference=vout)
        out[kind] = {"schema": RUN_SCHEMA, "outputs": [o.to_json() for o in rec]}
    return out


def _first_error(text: str) -> str:
    """The first line that reports an error (vLLM logs and tracebacks), else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if _ERROR_LINE.search(ln):
            return ln[:400]
    return lines[-1][:400] if lines else ""
