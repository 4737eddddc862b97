"""The model stage's worker: one model through vLLM on this machine's GPU, written as JSON.

    python3 model_worker.py MODEL_DIR OUT.json --workload WORKLOAD.json [--quantization Q]
        [--reference RUN.json] [--compile] [--attention-backend B] [--libs A.so,B.so]
        [--evidence]

`vllm.LLM(model=MODEL_DIR)` generates the workload's greedy tokens (with each chosen token's
logprob), scores a reference run's tokens teacher-forced (``--reference``), times one
generate() of many requests and, with ``--evidence``, profiles one generate(): the ``_C::``
ops called and the CUDA kernels run, each mapped to the built library (``--libs``) that holds
it (cuobjdump --list-text and nm, c++filt). The judgement is the stage's (``modelstage.judge``):
this file only runs and records. Exit 3 (``EXIT_NO_VLLM``) when torch, vllm or tokenizers
do not import.

Run by: the Python that has vLLM (the cell's env with the build's installable dir on
PYTHONPATH, or ``vllm-matrix model --python``), from ``stages/model/modelstage.py``.
May import: the standard library, torch, vllm, tokenizers (vLLM's own dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_SCHEMA = "vllm-matrix/model-run"  # modelstage.RUN_SCHEMA reads it
EXIT_NO_VLLM = 3  # the exit code when `import vllm` fails (modelstage.EXIT_NO_VLLM)
_LIST_TEXT = re.compile(r"(?:: x-|\.text\.)(\S+?)(?:\.sm_\w+\.elf\.bin)?$", re.M)
# cuobjdump --list-text's shortened long names: "_Z11long-1" (the first characters, a counter)
_SHORTENED = re.compile(r"-\d+$")


@dataclass(frozen=True)
class Workload:
    """What the worker needs of knowledge/data/model.toml (modelstage.write_workload)."""

    prompts: tuple[str, ...]
    max_tokens: int
    throughput_requests: int


@dataclass(frozen=True)
class Reference:
    """One prompt of a reference run: the prompt's token ids and the greedy tokens."""

    prompt_ids: tuple[int, ...]
    tokens: tuple[int, ...]


def _load_workload(path: Path) -> Workload:
    d = json.loads(path.read_text())
    return Workload(tuple(d["prompts"]), int(d["max_tokens"]), int(d["throughput_requests"]))


def _read_reference(doc: dict[str, Any]) -> list[Reference]:
    return [Reference(tuple(o["prompt_ids"]), tuple(o["tokens"])) for o in doc["outputs"]]


def output_of(argv: Sequence[str], *, timeout: float) -> str | None:
    """A program's stdout, or None when it is missing or fails: infra.proc.output_of's
    rule (found on PATH, else beside this interpreter), here where vllm_matrix is not."""
    exe = shutil.which(argv[0])
    if exe is None and (Path(sys.executable).parent / argv[0]).is_file():
        exe = str(Path(sys.executable).parent / argv[0])
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def _chosen(pos: Any, token: int) -> float:
    return float(pos[token].logprob)


def _top1(pos: Any) -> int:
    return int(max(pos.items(), key=lambda kv: kv[1].logprob)[0])


def _ops_of_libs(torch: Any, libs: Sequence[str]) -> dict[str, list[str]]:
    """Each built library -> the ``_C::`` ops it registers (loaded one after another
    before vLLM imports them; both libraries register into the ``_C`` namespace)."""
    out: dict[str, list[str]] = {}
    seen = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("_C::")}
    for lib in libs:
        torch.ops.load_library(lib)
        now = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("_C::")}
        out[Path(lib).name] = sorted(now - seen)
        seen = now
    return out


def _kernels_of_libs(libs: Sequence[str]) -> dict[str, set[str]]:
    """Each built library -> its kernels' names, demangled.

    Two sources, both read: ``cuobjdump --list-text`` (the device functions of its
    fatbinary) and ``nm --defined-only`` (the host symbols: every kernel the library
    launches has a host stub with the kernel's own mangled name). cuobjdump shortens a long
    name to its first characters and a counter ("x-_Z11long-1.sm_90a.elf.bin", measured
    with nvcc 12.4 on a 493-character name), which is why issue 24's H100 run found none of
    CUTLASS's GEMM kernels (names of 400+ characters) in ``_C_stable_libtorch``'s list."""
    out: dict[str, set[str]] = {}
    for lib in libs:
        mangled = set(
            device_functions(output_of(["cuobjdump", "--list-text", lib], timeout=300) or "")
        )
        mangled |= set(
            host_kernel_symbols(output_of(["nm", "--defined-only", lib], timeout=300) or "")
        )
        out[Path(lib).name] = _demangle(sorted(mangled))
    return out


def device_functions(list_text: str) -> list[str]:
    """Mangled names of ``cuobjdump --list-text`` output, less the shortened ones."""
    return [n for n in _LIST_TEXT.findall(list_text) if not _SHORTENED.search(n)]


def host_kernel_symbols(nm_text: str) -> list[str]:
    """Mangled names of ``nm --defined-only`` output that can name a kernel: functions
    (T/t/W/w), C++ names, not the compiler's device-stub wrappers."""
    names = []
    for line in nm_text.splitlines():
        parts = line.split()
        if (
            len(parts) == 3
            and parts[1] in "TtWw"
            and parts[2].startswith("_Z")
            and "__device_stub__" not in parts[2]
            and "__wrapper__" not in parts[2]
        ):
            names.append(parts[2])
    return names


def _demangle(mangled: Sequence[str]) -> set[str]:
    names: set[str] = set()
    for i in range(0, len(mangled), 200):
        chunk = list(mangled[i : i + 200])
        dem = output_of(["c++filt", *chunk], timeout=120)
        lines = dem.splitlines() if dem is not None else []
        names |= set(lines) if len(lines) == len(chunk) else set(chunk)
    return names


def _idents(name: str) -> frozenset[str]:
    return frozenset(re.findall(r"[A-Za-z_]\w*(?:::[A-Za-z_]\w*)+", name))


def _norm(name: str) -> str:
    return re.sub(r"\s+", "", name)


def _profile(
    torch: Any, vllm: Any, llm: Any, ids: list[list[int]], libs: Sequence[str], trace: Path | None
) -> dict[str, Any]:
    """One profiled generate(): the ``_C::`` ops called (CPU events of the dispatcher) and
    the CUDA kernels run, each kernel mapped to the built library that holds it."""
    from torch.profiler import ProfilerActivity, profile

    params = vllm.SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    prompts = [vllm.TokensPrompt(prompt_token_ids=i) for i in ids]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate(prompts, params)
        torch.cuda.synchronize()
    ops: dict[str, int] = {}
    kernels: dict[str, int] = {}
    for e in prof.events():
        if str(e.device_type).endswith("CUDA"):
            kernels[e.name] = kernels.get(e.name, 0) + 1
        elif e.name.startswith("_C::"):
            ops[e.name] = ops.get(e.name, 0) + 1
    if trace is not None:
        try:
            prof.export_chrome_trace(str(trace))
        except Exception as exc:  # the counts above stand without the file
            print(f"model worker: trace not written: {exc}", file=sys.stderr)
    owned = _kernels_of_libs(libs)
    mapped, other, by_idents = map_kernels(kernels, owned)
    return {
        "ops_called": dict(sorted(ops.items())),
        "kernels_by_library": mapped,
        "kernels_elsewhere": dict(sorted(other.items(), key=lambda kv: -kv[1])[:40]),
        "library_functions": {k: len(v) for k, v in owned.items()},
        "matched_by_identifiers": by_idents,
        # What the libraries' GEMM functions look like (issue 24's H100 run found none of
        # the trace's CUTLASS GEMM launches in _C_stable_libtorch's list, cause unknown).
        "library_gemm_sample": {
            k: sorted(x[:400] for x in v if "gemm" in x or "scaled_mm" in x)[:8]
            for k, v in owned.items()
        },
        "trace": trace.name if trace is not None else None,
    }


def map_kernels(
    kernels: Mapping[str, int], owned: Mapping[str, set[str]]
) -> tuple[dict[str, dict[str, int]], dict[str, int], list[str]]:
    """(library -> its kernels' launches, launches found in no built library, the kernels
    matched by identifiers). A kernel is the library's when its demangled name, spaces
    removed, is one of the library's functions; else (c++filt and the profiler may spell a
    template differently) when its qualified identifiers, vllm:: among them, are all in
    one function of exactly one library (no library but the built ones has vllm::)."""
    mapped: dict[str, dict[str, int]] = {lib: {} for lib in owned}
    other: dict[str, int] = {}
    # Identifiers from the names as demangled: with spaces removed "void cutlass::..."
    # would read "voidcutlass::..." (issue 24's run matched nothing by identifiers so).
    idents = {lib: [_idents(x) for x in names] for lib, names in owned.items()}
    exact = {lib: {_norm(x) for x in names} for lib, names in owned.items()}
    by_idents: list[str] = []
    for name, n in kernels.items():
        key = _norm(name)
        hit = next((lib for lib, names in exact.items() if key in names), None)
        if hit is None and "vllm::" in name:
            want = _idents(name)
            hits = [lib for lib, sets in idents.items() if any(want <= x for x in sets)]
            hit = hits[0] if len(hits) == 1 else None
            if hit is not None:
                by_idents.append(name)
        if hit is None:
            other[name] = n
        else:
            mapped[hit][name] = n
    return mapped, other, by_idents


class _Lines:
    """Collects vLLM's log messages that name a chosen kernel or backend."""

    WANT = re.compile(r"Selected \w+ for |attention backend|Using \w+ backend", re.I)

    def __init__(self) -> None:
        import logging

        class H(logging.Handler):
            def emit(inner, record: logging.LogRecord) -> None:
                try:
                    msg = record.getMessage()
                except Exception:
                    return
                if self.WANT.search(msg):
                    self.lines.append(msg)

        self.lines: list[str] = []
        self.handler = H()
        logging.getLogger("vllm").addHandler(self.handler)


def worker_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 model_worker.py")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--workload", required=True, help="the workload as JSON (write_workload)")
    p.add_argument("--quantization")
    p.add_argument("--reference", help="a run's JSON whose tokens this model scores")
    p.add_argument("--compile", action="store_true", help="torch.compile + CUDA graphs")
    p.add_argument("--attention-backend", help="e.g. TRITON_ATTN (no flash-attn built)")
    p.add_argument("--libs", default="", help="the built extensions, comma-separated")
    p.add_argument("--evidence", action="store_true", help="profile: ops, kernels, log lines")
    a = p.parse_args(argv)
    libs = [x for x in a.libs.split(",") if x]
    # The engine in this process: the profiler and the log handler see the model run.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import torch

        lib_ops = _ops_of_libs(torch, libs) if libs else {}
        import vllm
        from tokenizers import Tokenizer
    except ImportError as exc:
        print(f"error: cannot start the model worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        missing = getattr(exc, "name", None)
        if missing:
            print(f"missing module: {missing}", file=sys.stderr)
        return EXIT_NO_VLLM
    lines = _Lines()
    w = _load_workload(Path(a.workload))
    tok = Tokenizer.from_file(str(Path(a.model) / "tokenizer.json"))
    ids = [tok.encode(s).ids for s in w.prompts]
    t0 = time.monotonic()
    kw: dict[str, Any] = {}
    if a.attention_backend:
        kw["attention_config"] = {"backend": a.attention_backend}
    llm = vllm.LLM(
        model=a.model,
        quantization=a.quantization,
        dtype="bfloat16",
        seed=0,
        max_model_len=512,
        max_num_seqs=64,
        gpu_memory_utilization=0.3,
        enforce_eager=not a.compile,
        **kw,
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
        ref = _read_reference(json.loads(Path(a.reference).read_text()))
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
    evidence: dict[str, Any] = {"library_ops": lib_ops}
    if a.evidence:
        try:
            trace = Path(a.out).with_suffix(".trace.json")
            evidence |= _profile(torch, vllm, llm, ids, libs, trace)
        except Exception as exc:
            evidence["error"] = f"{type(exc).__name__}: {exc}"[:500]
    evidence["log_lines"] = lines.lines
    doc = {
        "schema": RUN_SCHEMA,
        "model": Path(a.model).name,
        "quantization": a.quantization,
        "vllm": vllm.__version__,
        "vllm_file": str(Path(vllm.__file__).parent),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compiled": a.compile,
        "attention_backend": a.attention_backend,
        "load_seconds": round(load_s, 2),
        "outputs": outputs,
        "throughput": {
            "requests": len(reqs),
            "output_tokens": ntok,
            "seconds": round(dt, 3),
            "tokens_per_s": round(ntok / dt, 1),
        },
        "evidence": evidence,
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
