"""The `model` stage: an installed vLLM serves the tiny ModelOpt FP8 checkpoint.

`vllm.LLM(model=<fp8 dir>, quantization="modelopt")` and the same model in bf16 each
generate `max_tokens` greedy tokens for the workload's prompts (knowledge/data/model.toml); the FP8
model also scores the bf16 model's tokens teacher-forced (prompt_logprobs), and the
comparison is judged against the tolerance argued in that file. Throughput: one generate()
of many requests per model. Where torch, safetensors and tokenizers import (they do beside
vLLM), vLLM's outputs are also checked against the plain-torch forward of the same
checkpoint (tinymodel.py): that separates "FP8 changed the answers" from "vLLM loaded the
checkpoint wrong".

Each model runs in a worker process of its own (`python -m vllm_matrix.stages.modelstage`): two
engines in one process do not give the GPU memory back reliably. Without a GPU the stage is
"not run: no GPU" (SKIP). It has not run end to end on any machine yet (no vLLM built by the
tool has been installed beside a GPU): see docs-model.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vllm_matrix.infra import proc, programs
from vllm_matrix.infra.errors import CommandError
from vllm_matrix.infra.results import ERROR, FAIL, PASS, SKIP, Finding, StageResult
from vllm_matrix.stages import modelcheck

STAGE = "model"
RUN_SCHEMA = "vllm-matrix/model-run"
EXIT_NO_VLLM = 3  # the worker's exit code when `import vllm` fails


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None where there is none."""
    smi = programs.find("nvidia-smi")
    if smi is None:
        return None
    out = proc.output_of([smi, "--query-gpu=name", "--format=csv,noheader"], timeout=20)
    lines = (out or "").strip().splitlines()
    return lines[0].strip() if lines else None


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
) -> dict[str, Any]:
    argv: list[str] = [python, "-m", "vllm_matrix.stages.modelstage", str(model), str(out)]
    argv += ["--workload", str(workload)]
    argv += ["--quantization", quantization] if quantization else []
    argv += ["--reference", str(reference)] if reference else []
    proc.run(argv, log=log, timeout=timeout, on_line=on_line)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def run(
    bf16_dir: Path,
    fp8_dir: Path,
    work: Path,
    *,
    python: str = sys.executable,
    workload_file: Path = modelcheck.DATA,
    timeout: float = 900,
    echo: Callable[[str], None] | None = None,
) -> StageResult:
    """The stage on this machine: both models through vLLM (in `python`), then judged."""
    t0 = time.monotonic()
    gpu = gpu_name()
    if gpu is None:
        return not_run("no GPU")
    work.mkdir(parents=True, exist_ok=True)
    log = work / "model.log"
    workload = modelcheck.load(workload_file)
    try:
        bf16 = _worker(
            python, bf16_dir, work / "bf16.json", workload_file, log, None, None, timeout, echo
        )
        fp8 = _worker(
            python,
            fp8_dir,
            work / "fp8.json",
            workload_file,
            log,
            "modelopt",
            work / "bf16.json",
            timeout,
            echo,
        )
    except CommandError as exc:
        no_vllm = exc.returncode == EXIT_NO_VLLM
        return StageResult(
            STAGE,
            ERROR if no_vllm else FAIL,
            round(time.monotonic() - t0, 2),
            "vLLM is not importable" if no_vllm else "vLLM did not serve the checkpoint",
            (
                Finding(
                    "model-run",
                    "error" if no_vllm else "fail",
                    exc.tail.strip().splitlines()[-1] if exc.tail.strip() else exc.message,
                    fix="install the wheel the build stage made (and its runtime packages)"
                    if no_vllm
                    else "see the log",
                ),
            ),
            log=str(log),
        )
    reference = _reference(bf16_dir, fp8_dir, bf16, fp8, workload)
    res = judge(bf16, fp8, workload, reference, time.monotonic() - t0)
    return StageResult(
        res.stage,
        res.status,
        res.seconds,
        res.summary,
        res.findings,
        res.details | {"gpu_name": gpu},
        str(log),
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
        from vllm_matrix.stages import tinymodel
    except ImportError:
        return None
    out = {}
    for kind, d, doc in (("bf16", bf16_dir, bf16), ("fp8", fp8_dir, fp8)):
        vout = _outputs(doc)
        rec = tinymodel.record(d, [o.prompt_ids for o in vout], workload.max_tokens, reference=vout)
        out[kind] = {"schema": RUN_SCHEMA, "outputs": [o.to_json() for o in rec]}
    return out


# --- the worker: runs inside the env that has vLLM (and the GPU) ---------------------------


def _chosen(pos: Any, token: int) -> float:
    return float(pos[token].logprob)


def _top1(pos: Any) -> int:
    return int(max(pos.items(), key=lambda kv: kv[1].logprob)[0])


def worker_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vllm_matrix.stages.modelstage")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--workload", default=str(modelcheck.DATA))
    p.add_argument("--quantization")
    p.add_argument("--reference", help="a run's JSON whose tokens this model scores")
    p.add_argument("--compile", action="store_true", help="torch.compile + CUDA graphs")
    a = p.parse_args(argv)
    try:
        import torch
        import vllm
        from tokenizers import Tokenizer
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_VLLM
    w = modelcheck.load(Path(a.workload))
    tok = Tokenizer.from_file(str(Path(a.model) / "tokenizer.json"))
    ids = [tok.encode(s).ids for s in w.prompts]
    t0 = time.monotonic()
    llm = vllm.LLM(
        model=a.model,
        quantization=a.quantization,
        dtype="bfloat16",
        seed=0,
        max_model_len=512,
        gpu_memory_utilization=0.3,
        enforce_eager=not a.compile,
    )
    load_s = time.monotonic() - t0
    greedy = vllm.SamplingParams(
        temperature=0.0, max_tokens=w.max_tokens, logprobs=1, ignore_eos=True
    )
    res = llm.generate([vllm.TokensPrompt(prompt_token_ids=i) for i in ids], greedy)
    outputs = []
    for i, r in zip(ids, res, strict=True):
        c = r.outputs[0]
        toks = [int(t) for t in c.token_ids]
        lps = [_chosen(c.logprobs[n], t) for n, t in enumerate(toks)]
        outputs.append({"prompt_ids": i, "tokens": toks, "logprobs": lps})
    if a.reference:
        ref = modelcheck.read_outputs(json.loads(Path(a.reference).read_text()))
        score = vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        seqs = [list(r.prompt_ids) + list(r.tokens) for r in ref]
        forced = llm.generate([vllm.TokensPrompt(prompt_token_ids=s) for s in seqs], score)
        for o, r, f in zip(outputs, ref, forced, strict=True):
            pl = f.prompt_logprobs or []
            start = len(r.prompt_ids)
            o["forced_top1"] = [_top1(pl[start + n]) for n in range(len(r.tokens))]
            o["forced_logprobs"] = [_chosen(pl[start + n], t) for n, t in enumerate(r.tokens)]
    reqs = [
        vllm.TokensPrompt(prompt_token_ids=ids[n % len(ids)]) for n in range(w.throughput_requests)
    ]
    torch.cuda.synchronize()
    t1 = time.monotonic()
    tres = llm.generate(reqs, greedy)
    torch.cuda.synchronize()
    dt = time.monotonic() - t1
    ntok = sum(len(r.outputs[0].token_ids) for r in tres)
    doc = {
        "schema": RUN_SCHEMA,
        "model": Path(a.model).name,
        "quantization": a.quantization,
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compiled": a.compile,
        "load_seconds": round(load_s, 2),
        "outputs": outputs,
        "throughput": {
            "requests": len(reqs),
            "output_tokens": ntok,
            "seconds": round(dt, 3),
            "tokens_per_s": round(ntok / dt, 1),
        },
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
