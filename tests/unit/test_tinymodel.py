"""tinymodel: the tiny Llama checkpoint, bf16 and ModelOpt FP8, made here and loaded back.

Needs the [model] extra (torch, safetensors, numpy, tokenizers), which is not part of dev:
without it the module skips, and fails with CI=true (.ci/run installs the extra, with the
CPU build of torch). The comparison numbers are printed (-s) and kept in tests/unit/model/
as the model stage's recorded outputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import need_module

torch = need_module("torch", "the [model] extra")
for _name in ("safetensors", "tokenizers", "numpy"):
    need_module(_name, "the [model] extra")

from safetensors.torch import load_file  # noqa: E402

from vllm_matrix.stages.model import modelcheck, modelstage, tinymodel  # noqa: E402
from vllm_matrix.workers import model_worker  # noqa: E402

FIXTURES = Path(__file__).parent / "model"
# A model this small runs fastest on one thread (several only contend on a busy machine).
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tinymodel.Made:
    return tinymodel.make(tmp_path_factory.mktemp("tiny"))


def test_files_and_configs(made: tinymodel.Made) -> None:
    for d in (made.bf16, made.fp8):
        names = {p.name for p in d.iterdir()}
        assert {
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        } <= names
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
        assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (
            2,
            256,
            512,
        )
        assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
        assert "quantization_config" not in cfg  # else vLLM ignores hf_quant_config.json
    assert not (made.bf16 / "hf_quant_config.json").exists()
    q = json.loads((made.fp8 / "hf_quant_config.json").read_text())
    assert q["producer"]["name"] == "modelopt" and q["producer"]["version"]
    assert q["quantization"] == {
        "quant_algo": "FP8",
        "kv_cache_quant_algo": None,
        "exclude_modules": ["lm_head"],
    }
    # The fp8 safetensors is about 60% of the bf16 one (linears at 1 byte, the rest bf16).
    assert made.sizes["fp8"] < 0.7 * made.sizes["bf16"]
    print(f"\ncheckpoint sizes (model.safetensors): {made.sizes}")


def test_tensor_names_and_dtypes(made: tinymodel.Made) -> None:
    b = load_file(str(made.bf16 / "model.safetensors"))
    q = load_file(str(made.fp8 / "model.safetensors"))
    linears = made.spec.linear_names()
    assert len(linears) == 14
    assert {f"{n}.weight" for n in linears} <= set(b)
    extra = {f"{n}.{s}" for n in linears for s in ("weight_scale", "input_scale")}
    assert set(q) == set(b) | extra
    assert all(t.dtype == torch.bfloat16 for t in b.values())
    for n in linears:
        assert q[f"{n}.weight"].dtype == torch.float8_e4m3fn
        assert q[f"{n}.weight"].shape == b[f"{n}.weight"].shape
        for s in ("weight_scale", "input_scale"):
            assert q[f"{n}.{s}"].dtype == torch.float32 and q[f"{n}.{s}"].shape == ()
            assert float(q[f"{n}.{s}"]) > 0
    # Everything that is not a decoder Linear (embeddings, norms, lm_head: excluded) is
    # the bf16 tensor, bit for bit.
    for k, t in b.items():
        if k.removesuffix(".weight") not in linears:
            assert q[k].dtype == torch.bfloat16 and torch.equal(q[k], t), k
    assert q["lm_head.weight"].dtype == torch.bfloat16


def test_dequantized_weights_within_e4m3_rounding(made: tinymodel.Made) -> None:
    """E4M3 keeps 3 mantissa bits: in a binade [2^e, 2^(e+1)) the spacing is 2^(e-3), so
    round-to-nearest is off by at most 2^(e-4) <= 2^-4 = 6.25% of the value. Below the
    smallest normal (2^-6 after scaling) the spacing is fixed at 2^-9: an absolute error
    of at most 2^-10 x scale. The per-tensor scale maps the largest |w| to 448 exactly,
    so nothing clips."""
    b = load_file(str(made.bf16 / "model.safetensors"))
    q = load_file(str(made.fp8 / "model.safetensors"))
    worst, rms = 0.0, []
    for n in made.spec.linear_names():
        w = b[f"{n}.weight"].float()
        s = q[f"{n}.weight_scale"]
        assert math.isclose(float(s), float(w.abs().max()) / 448.0, rel_tol=1e-6)
        d = tinymodel.dequantize(q, n)
        err = (d - w).abs()
        bound = torch.maximum(w.abs() * 2.0**-4, s * 2.0**-10) * (1 + 1e-6)
        assert bool((err <= bound).all()), n
        normal = w.abs() >= s * 2.0**-6
        rel = err[normal] / w.abs()[normal]
        worst = max(worst, float(rel.max()))
        rms.append(float(rel.pow(2).mean().sqrt()))
    assert worst <= 0.0625 + 1e-6
    print(
        f"\nE4M3 weight error: max relative {worst:.4f}, rms relative {max(rms):.4f} (worst layer)"
    )


def test_input_scales_from_calibration(made: tinymodel.Made) -> None:
    """input_scale = amax / 448 over the calibration pass; Linears fed the same tensor
    (q/k/v, gate/up) get the same scale: vLLM's fused layers keep the max anyway."""
    q = load_file(str(made.fp8 / "model.safetensors"))
    b = load_file(str(made.bf16 / "model.safetensors"))
    tok = tinymodel.build_tokenizer()
    amax = tinymodel.calibrate(b, made.spec, tinymodel.calibration_ids(made.spec, tok))
    for n, a in amax.items():
        assert a > 0
        assert math.isclose(float(q[f"{n}.input_scale"]), a / 448.0, rel_tol=1e-6)
    for layer in range(made.spec.num_hidden_layers):
        p = f"model.layers.{layer}"
        qkv = {float(q[f"{p}.self_attn.{x}_proj.input_scale"]) for x in "qkv"}
        gu = {float(q[f"{p}.mlp.{x}_proj.input_scale"]) for x in ("gate", "up")}
        assert len(qkv) == 1 and len(gu) == 1


def test_tokenizer_and_weights_are_reproducible(made: tinymodel.Made, tmp_path: Path) -> None:
    tok = tinymodel.build_tokenizer()
    assert tok.get_vocab_size() == 512
    assert tok.to_str() == tinymodel.build_tokenizer().to_str()
    for p in modelcheck.load().prompts:
        ids = tok.encode(p).ids
        assert ids[0] == tok.token_to_id(tinymodel.BOS)
        assert tok.decode(ids, skip_special_tokens=True) == p
    again = tinymodel.make(tmp_path)
    assert again.sha256 == made.sha256


def _broken(made: tinymodel.Made, how: str) -> tinymodel.Linear:
    """The FP8 checkpoint computed as a faulty loader would."""
    q = load_file(str(made.fp8 / "model.safetensors"))
    for k in list(q):
        if how == "weight_scale dropped" and k.endswith(".weight_scale"):
            q[k] = torch.tensor(1.0)
        if how == "input_scale left at the loader's init" and k.endswith(".input_scale"):
            q[k] = torch.tensor(torch.finfo(torch.float32).min)  # modelopt.py:498
    return tinymodel.fp8_linear(q)


def _doc(outputs: list[modelcheck.Output], note: str) -> dict[str, Any]:
    return {
        "schema": modelstage.RUN_SCHEMA,
        "recorded": note,
        "vllm": None,
        "gpu": None,
        "outputs": [o.to_json() for o in outputs],
    }


def recordings(made: tinymodel.Made) -> dict[str, dict[str, Any]]:
    """The model stage's worker documents, made with the plain-torch forward on CPU."""
    w = modelcheck.load()
    ids = tinymodel.prompt_ids(made.bf16, w.prompts)
    ref = tinymodel.record(made.bf16, ids, w.max_tokens)
    fp8 = tinymodel.record(made.fp8, ids, w.max_tokens, reference=ref)
    docs = {
        "bf16": _doc(ref, "tinymodel.record on CPU: the bf16 checkpoint (seed 0)"),
        "fp8": _doc(fp8, "tinymodel.record on CPU: the FP8 checkpoint, scoring bf16's tokens"),
    }
    wb, _, spec = tinymodel.load(made.bf16)
    bad = _broken(made, "weight_scale dropped")
    outs = []
    with torch.no_grad():
        for i, r in zip(ids, ref, strict=True):
            toks, lps = tinymodel.greedy(wb, spec, bad, i, w.max_tokens)
            top, forced = tinymodel.score(wb, spec, bad, i, r.tokens)
            outs.append(
                modelcheck.Output(tuple(i), tuple(toks), tuple(lps), tuple(top), tuple(forced))
            )
    docs["fp8-weight-scale-dropped"] = _doc(
        outs, "tinymodel on CPU: the FP8 checkpoint with weight_scale read as 1 (a loader defect)"
    )
    return docs


def test_fp8_agrees_with_bf16_on_cpu(made: tinymodel.Made) -> None:
    """The numbers the model stage's tolerance rests on (knowledge/data/model.toml)."""
    c = tinymodel.compare_cpu(made)
    tol = modelcheck.load().fp8_vs_bf16
    print(f"\nCPU fp8 vs bf16: {json.dumps(c.to_json())}")
    assert modelcheck.within(c, tol) == []
    assert c.forced_top1_agreement is not None and c.forced_top1_agreement >= 0.85
    assert c.common_prefix[0] > 0 or c.identical_sequences < c.prompts


@pytest.mark.parametrize("how", ["weight_scale dropped", "input_scale left at the loader's init"])
def test_tolerance_catches_a_loader_defect(made: tinymodel.Made, how: str) -> None:
    w = modelcheck.load()
    ids = tinymodel.prompt_ids(made.bf16, w.prompts)
    ref = tinymodel.record(made.bf16, ids, w.max_tokens)
    wq, _, spec = tinymodel.load(made.fp8)
    bad = _broken(made, how)
    outs = []
    with torch.no_grad():
        for i, r in zip(ids, ref, strict=True):
            top, forced = tinymodel.score(wq, spec, bad, i, r.tokens)
            outs.append(
                modelcheck.Output(tuple(i), r.tokens, r.logprobs, tuple(top), tuple(forced))
            )
    c = modelcheck.compare(ref, outs)
    print(f"\n{how}: top-1 {c.forced_top1_agreement}, mean |dlp| {c.forced_mean_abs_dlogprob}")
    assert len(modelcheck.within(c, w.fp8_vs_bf16)) == 2


# Greedy paths of a random tiny model part at near-ties, and where depends on the CPU's
# matmul kernels (FP8's fake quantisation turns a last-bit difference into a step of the
# E4M3 grid). Measured: the fixtures, made on the seed's machine, against torch
# 2.13.0+cpu on a Xeon with AMX: bf16 identical (|dlogprob| <= 1e-5); fp8: 1 of 8
# sequences parts at token 15 of 32, |dlogprob| <= 0.06 before it, 1 forced top-1 differs;
# weight_scale dropped: 4 of 8 part, the earliest at token 7. A changed seed, model or
# quantisation parts at the first tokens.
MIN_SHARED_TOKENS = 4


def test_recorded_fixtures_are_what_tinymodel_makes(made: tinymodel.Made) -> None:
    """tests/unit/model/*.json (the model stage's CPU tests read them without torch) are
    this module's real output; regenerate with `python tests/unit/test_tinymodel.py`."""
    for name, doc in recordings(made).items():
        kept = json.loads((FIXTURES / f"{name}.json").read_text())
        a, b = modelcheck.read_outputs(kept), modelcheck.read_outputs(doc)
        for x, y in zip(a, b, strict=True):
            assert x.prompt_ids == y.prompt_ids
            pairs = zip(x.tokens, y.tokens, strict=True)
            shared = next((k for k, (p, q) in enumerate(pairs) if p != q), len(x.tokens))
            top1_differ = sum(p != q for p, q in zip(x.forced_top1, y.forced_top1, strict=True))
            if name == "bf16":
                assert shared == len(x.tokens) and top1_differ == 0
            assert shared >= MIN_SHARED_TOKENS and top1_differ <= 1, (name, shared, top1_differ)
            if "dropped" in name:
                continue  # activations of 1e5 and more: logprobs follow the summation order
            tol = 1e-3 if name == "bf16" else 0.1
            assert all(
                math.isclose(p, q, rel_tol=1e-4, abs_tol=tol)
                for p, q in zip(x.logprobs[:shared], y.logprobs[:shared], strict=True)
            ), name


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        m = tinymodel.make(Path(d))
        FIXTURES.mkdir(exist_ok=True)
        for name, doc in recordings(m).items():
            (FIXTURES / f"{name}.json").write_text(json.dumps(doc) + "\n")
            print(FIXTURES / f"{name}.json")


def test_transformers_reads_it_as_the_same_llama(made: tinymodel.Made) -> None:
    """HF's own LlamaForCausalLM and AutoTokenizer (what vLLM's config and tokenizer
    loading use) read the bf16 checkpoint as the model tinymodel.forward computes: the
    reference the model stage scores vLLM against is a Llama, not a look-alike. Measured
    with transformers 5.17.0 (the GPU machine's): max |logit difference| 7.6e-6."""
    transformers = need_module("transformers", "the forward's cross-check; .ci/run has it")
    tok = transformers.AutoTokenizer.from_pretrained(made.bf16)
    prompts = modelcheck.load().prompts
    ids = tinymodel.prompt_ids(made.bf16, prompts)
    assert [tok(p)["input_ids"] for p in prompts] == ids
    m = transformers.LlamaForCausalLM.from_pretrained(made.bf16, dtype=torch.float32).eval()
    w, lin, spec = tinymodel.load(made.bf16)
    with torch.no_grad():
        for i in ids:
            hf = m(torch.tensor([i])).logits[0]
            assert float((hf - tinymodel.forward(w, spec, i, lin)).abs().max()) < 1e-3
    cfg = transformers.AutoConfig.from_pretrained(made.fp8)
    assert cfg.architectures == ["LlamaForCausalLM"]


class _FakeVllm:
    """A fixture with vLLM 0.20's LLM.generate output shapes (RequestOutput.outputs[0]
    .token_ids / .logprobs as {token: Logprob}, prompt_logprobs with None first), computed
    by the plain-torch forward: it exercises the model stage's worker (which positions it
    reads, how it scores the reference) on CPU. It is not vLLM: nothing here says vLLM
    loads the checkpoint; that needs the GPU run (docs/gpu-runs.md, "The model stage")."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.ns = SimpleNamespace
        self.__version__ = "fake"
        self.__file__ = __file__  # the worker records where vLLM was imported from

    def SamplingParams(self, **kw: Any) -> Any:
        return self.ns(**kw)

    def TokensPrompt(self, prompt_token_ids: list[int]) -> Any:
        return {"prompt_token_ids": prompt_token_ids}

    def LLM(self, model: str, quantization: str | None = None, **kw: Any) -> Any:
        assert (quantization == "modelopt") == (Path(model) / "hf_quant_config.json").exists()
        w, lin, spec = tinymodel.load(Path(model))
        ns = self.ns

        def lp_dict(row: Any, token: int) -> dict[int, Any]:
            top = int(row.argmax())
            return {token: ns(logprob=float(row[token])), top: ns(logprob=float(row[top]))}

        def generate(prompts: list[dict[str, list[int]]], p: Any) -> list[Any]:
            res = []
            for pr in prompts:
                ids = pr["prompt_token_ids"]
                toks, _ = tinymodel.greedy(w, spec, lin, ids, p.max_tokens)
                with torch.no_grad():
                    rows = torch.log_softmax(tinymodel.forward(w, spec, ids + toks, lin), -1)
                n = len(ids)
                gen = [lp_dict(rows[n - 1 + k], t) for k, t in enumerate(toks)]
                prompt_lps = [None] + [lp_dict(rows[k - 1], ids[k]) for k in range(1, n)]
                res.append(
                    ns(
                        outputs=[ns(token_ids=toks, logprobs=gen)],
                        prompt_logprobs=prompt_lps if getattr(p, "prompt_logprobs", None) else None,
                    )
                )
            return res

        return ns(generate=generate)


def test_worker_reads_vllm_outputs_as_the_reference_does(
    made: tinymodel.Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's documents, judged, give the numbers computed directly on CPU: its
    reading of generate()'s logprobs and of prompt_logprobs (offsets) is right."""
    import sys

    monkeypatch.setitem(sys.modules, "vllm", _FakeVllm())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "cpu (fixture)")
    wl = tmp_path / "model.toml"
    text = modelcheck.DATA.read_text().replace(
        "throughput_requests = 256", "throughput_requests = 2"
    )
    wl.write_text(text)
    wj = modelstage.write_workload(modelcheck.load(wl), tmp_path / "workload.json")
    b, q = tmp_path / "bf16.json", tmp_path / "fp8.json"
    assert model_worker.worker_main([str(made.bf16), str(b), "--workload", str(wj)]) == 0
    argv = [str(made.fp8), str(q), "--workload", str(wj), "--quantization", "modelopt"]
    assert model_worker.worker_main([*argv, "--reference", str(b)]) == 0
    bdoc, qdoc = json.loads(b.read_text()), json.loads(q.read_text())
    assert qdoc["throughput"]["requests"] == 2 and qdoc["throughput"]["output_tokens"] == 64
    res = modelstage.judge(bdoc, qdoc, modelcheck.load(wl))
    direct = tinymodel.compare_cpu(made)
    got = res.details["fp8_vs_bf16"]
    assert got["forced_top1_agreement"] == direct.forced_top1_agreement
    assert got["forced_mean_abs_dlogprob"] == pytest.approx(
        direct.forced_mean_abs_dlogprob, abs=2e-4
    )
    assert got["common_prefix"] == list(direct.common_prefix)
    assert res.status == "pass"


def _bf16_activations(lin: tinymodel.Linear) -> tinymodel.Linear:
    """vLLM's bf16 activations, simulated: each Linear's input and output rounded to bf16."""
    return lambda name, x: lin(name, x.to(torch.bfloat16).float()).to(torch.bfloat16).float()


def test_tolerances_hold_with_bf16_activations(made: tinymodel.Made) -> None:
    """The bounds of knowledge/data/model.toml against the simulation of what vLLM computes:
    fp8 vs bf16 both with bf16 activations (0.898 / 0.125 measured), and the bf16 model
    with bf16 activations vs its fp32 reference (0.996 / 0.007)."""
    w = modelcheck.load()
    ids = tinymodel.prompt_ids(made.bf16, w.prompts)
    wb, lb, spec = tinymodel.load(made.bf16)
    wq, lq, _ = tinymodel.load(made.fp8)
    lb16, lq16 = _bf16_activations(lb), _bf16_activations(lq)
    ref, fp8, ref32 = [], [], []
    for i in ids:
        toks, lps = tinymodel.greedy(wb, spec, lb16, i, w.max_tokens)
        ref.append(modelcheck.Output(tuple(i), tuple(toks), tuple(lps)))
        top, forced = tinymodel.score(wq, spec, lq16, i, toks)
        fp8.append(modelcheck.Output(tuple(i), tuple(toks), tuple(lps), tuple(top), tuple(forced)))
        top, forced = tinymodel.score(wb, spec, lb, i, toks)
        ref32.append(
            modelcheck.Output(tuple(i), tuple(toks), tuple(lps), tuple(top), tuple(forced))
        )
    c = modelcheck.compare(ref, fp8)
    r = modelcheck.compare(ref, ref32)
    print(
        f"\nbf16 activations: fp8 vs bf16 {c.forced_top1_agreement} / {c.forced_mean_abs_dlogprob}"
    )
    print(f"bf16 activations vs fp32: {r.forced_top1_agreement} / {r.forced_mean_abs_dlogprob}")
    assert modelcheck.within(c, w.fp8_vs_bf16) == []
    assert modelcheck.within(r, w.vllm_vs_reference) == []
