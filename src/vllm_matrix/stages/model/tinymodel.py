"""A tiny Llama checkpoint made here (no download), in bf16 and in ModelOpt FP8 form.

The `model` stage (modelstage.py) needs a ModelOpt FP8 checkpoint that vLLM's own loader
takes, on a machine that reaches no model hub. This module makes one from nothing: a
2-layer Llama with seeded random weights, a byte-level BPE tokenizer trained on a fixed
text, and the same model quantized the way ModelOpt's FP8 recipe does it (per-tensor
E4M3 weights, a static per-tensor input scale from a calibration pass).

What vLLM 0.20.0 reads, and where (paths in the release's sdist):
- `hf_quant_config.json` beside config.json is read when config.json has no
  `quantization_config` (vllm/transformers_utils/config.py:755-766); producer name
  "modelopt" + quant_algo "FP8" resolves to quantization "modelopt"
  (vllm/transformers_utils/model_arch_config_convertor.py:181-192,
  vllm/model_executor/model_loader/weight_utils.py:424-425).
- `quantization.quant_algo`, `kv_cache_quant_algo` (null: no KV-cache scales),
  `exclude_modules` (fnmatch wildcards) are the keys it parses
  (vllm/model_executor/layers/quantization/modelopt.py:274-292, 141-176; "FP8" is in
  QUANT_ALGOS at modelopt.py:103-117).
- Per quantized Linear: `weight` float8_e4m3fn [out, in], `weight_scale` and
  `input_scale` float32, one per logical matrix (modelopt.py:468-499, ModelOptFp8LinearMethod);
  scalars of shape [] are accepted ("AutoFP8 scales do not have a shape",
  vllm/model_executor/parameter.py:302-310 and 88-97).
- Llama's loader fuses q/k/v into qkv_proj and gate/up into gate_up_proj
  (vllm/model_executor/models/llama.py:442-449); the fused layer keeps the largest
  input_scale and requantizes weights to the largest weight_scale (modelopt.py:510-519),
  so separate per-projection scales, as ModelOpt writes them, are right.
- FP8 ModelOpt needs compute capability >= 8.9 (modelopt.py:404-405).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from vllm_matrix.stages.model import modelcheck

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max; ModelOpt's maxbound for E4M3
# The ModelOpt release whose export format this follows: the last that wrote the config
# only to hf_quant_config.json (vllm/transformers_utils/config.py:755-759).
MODELOPT_FORMAT_VERSION = "0.29.0"

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

# The tokenizer's training text: fixed, so the tokenizer (and its ids) never change.
CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "vLLM builds from source when no wheel matches the torch, CUDA and GPU at hand.",
    "A ModelOpt FP8 checkpoint stores each linear layer's weight in float8 e4m3 with a "
    "per-tensor weight scale and a static input scale from calibration.",
    "Hopper and Blackwell GPUs run FP8 matrix products in hardware.",
    "The compiler reads every translation unit, then the linker joins the objects.",
    "Once upon a time there was a small model with two layers and a byte tokenizer.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 4096.",
    "def main():\n    return 0\n",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Greedy decoding picks the token with the highest probability at each step.",
)


@dataclass(frozen=True)
class TinySpec:
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    seed: int = 0
    # Init scales. Linear layers: N(0, 1/fan_in), which keeps activations O(1) through the
    # residual stream. lm_head: logits with a standard deviation of `logit_std`, so greedy
    # choices are decided by clear margins, not by near-ties that any rounding flips (a
    # default 0.02 init gives near-uniform logits and makes a bf16/fp8 comparison noise).
    logit_std: float = 4.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of each Linear in a decoder layer, by HF name."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.num_key_value_heads
        return {
            "self_attn.q_proj": (h, h),
            "self_attn.k_proj": (kv * self.head_dim, h),
            "self_attn.v_proj": (kv * self.head_dim, h),
            "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }

    def linear_names(self) -> list[str]:
        return [
            f"model.layers.{n}.{k}"
            for n in range(self.num_hidden_layers)
            for k in self.linear_shapes()
        ]


def build_tokenizer(vocab_size: int = 512) -> Tokenizer:
    """Byte-level BPE trained on CORPUS: 256 byte symbols + 3 specials + merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS) * 4, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    return tok


def init_weights(spec: TinySpec) -> dict[str, torch.Tensor]:
    """The HF Llama state dict, bf16, from a seeded CPU generator (same on every machine)."""
    g = torch.Generator().manual_seed(spec.seed)

    def normal(shape: tuple[int, ...], std: float) -> torch.Tensor:
        return (torch.randn(shape, generator=g, dtype=torch.float32) * std).to(torch.bfloat16)

    h = spec.hidden_size
    w: dict[str, torch.Tensor] = {"model.embed_tokens.weight": normal((spec.vocab_size, h), 1.0)}
    for n in range(spec.num_hidden_layers):
        p = f"model.layers.{n}"
        w[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        w[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        for k, (o, i) in spec.linear_shapes().items():
            w[f"{p}.{k}.weight"] = normal((o, i), 1.0 / math.sqrt(i))
    w["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    w["lm_head.weight"] = normal((spec.vocab_size, h), spec.logit_std / math.sqrt(h))
    return w


# A Linear as the forward pass sees it: (layer name, input [.., in]) -> output [.., out].
Linear = Callable[[str, torch.Tensor], torch.Tensor]


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.float()


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """HF Llama's default rotary embedding (rotate_half; vLLM's neox style)."""
    t, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * emb.cos() + torch.cat((-x2, x1), dim=-1) * emb.sin()


def forward(
    weights: dict[str, torch.Tensor], spec: TinySpec, ids: Sequence[int], linear: Linear
) -> torch.Tensor:
    """Logits [len(ids), vocab] in float32: a plain Llama forward, one sequence."""
    x = weights["model.embed_tokens.weight"][torch.tensor(list(ids))].float()
    t, nh, nkv, hd = len(ids), spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    mask = torch.full((t, t), float("-inf")).triu(1)
    for n in range(spec.num_hidden_layers):
        p = f"model.layers.{n}"
        a = _rms(x, weights[f"{p}.input_layernorm.weight"], spec.rms_norm_eps)
        q = linear(f"{p}.self_attn.q_proj", a).view(t, nh, hd).transpose(0, 1)
        k = linear(f"{p}.self_attn.k_proj", a).view(t, nkv, hd).transpose(0, 1)
        v = linear(f"{p}.self_attn.v_proj", a).view(t, nkv, hd).transpose(0, 1)
        q, k = _rope(q, spec.rope_theta), _rope(k, spec.rope_theta)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(t, nh * hd)
        x = x + linear(f"{p}.self_attn.o_proj", o)
        m = _rms(x, weights[f"{p}.post_attention_layernorm.weight"], spec.rms_norm_eps)
        gate = linear(f"{p}.mlp.gate_proj", m)
        up = linear(f"{p}.mlp.up_proj", m)
        x = x + linear(f"{p}.mlp.down_proj", torch.nn.functional.silu(gate) * up)
    x = _rms(x, weights["model.norm.weight"], spec.rms_norm_eps)
    return x @ weights["lm_head.weight"].float().t()


def bf16_linear(weights: dict[str, torch.Tensor]) -> Linear:
    def f(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ weights[f"{name}.weight"].float().t()

    return f


def fake_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x -> E4M3 with a per-tensor scale -> back (what a static FP8 activation sees)."""
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8).float() * scale


def fp8_linear(weights: dict[str, torch.Tensor]) -> Linear:
    """A ModelOpt FP8 Linear as vLLM computes it: the input quantized with the static
    input_scale, the E4M3 weight times weight_scale, the product in float32."""

    deq = {
        k.removesuffix(".weight_scale"): dequantize(weights, k.removesuffix(".weight_scale"))
        for k in weights
        if k.endswith(".weight_scale")
    }

    def f(name: str, x: torch.Tensor) -> torch.Tensor:
        return fake_quant(x, weights[f"{name}.input_scale"]) @ deq[name].t()

    return f


def dequantize(weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """An FP8 Linear's weight back in float32: E4M3 value times its per-tensor scale."""
    return weights[f"{name}.weight"].float() * weights[f"{name}.weight_scale"]


def calibration_ids(
    spec: TinySpec, tok: Tokenizer, n_random: int = 4, length: int = 48
) -> list[list[int]]:
    """ModelOpt calibrates on a data set; here: the tokenizer's corpus and seeded random
    token sequences (not the evaluation prompts)."""
    g = torch.Generator().manual_seed(spec.seed + 1)
    seqs = [tok.encode(s).ids for s in CORPUS]
    seqs += [
        [int(i) for i in torch.randint(3, spec.vocab_size, (length,), generator=g)]
        for _ in range(n_random)
    ]
    return seqs


def calibrate(
    weights: dict[str, torch.Tensor], spec: TinySpec, seqs: Sequence[Sequence[int]]
) -> dict[str, float]:
    """amax of each Linear's input over the calibration sequences (bf16 model)."""
    amax: dict[str, float] = dict.fromkeys(spec.linear_names(), 0.0)
    base = bf16_linear(weights)

    def observe(name: str, x: torch.Tensor) -> torch.Tensor:
        amax[name] = max(amax[name], float(x.abs().max()))
        return base(name, x)

    with torch.no_grad():
        for s in seqs:
            forward(weights, spec, s, observe)
    return amax


def quantize(
    weights: dict[str, torch.Tensor], spec: TinySpec, amax: dict[str, float]
) -> dict[str, torch.Tensor]:
    """ModelOpt FP8 (per-tensor): scale = amax / 448 for weights and inputs; everything
    but the decoder layers' Linears (embeddings, norms, lm_head) stays bf16."""
    out = dict(weights)
    for name in spec.linear_names():
        w = weights[f"{name}.weight"].float()
        ws = w.abs().max() / FP8_MAX
        out[f"{name}.weight"] = (w / ws).clamp(-FP8_MAX, FP8_MAX).to(FP8)
        out[f"{name}.weight_scale"] = ws.to(torch.float32).reshape(())
        out[f"{name}.input_scale"] = torch.tensor(amax[name] / FP8_MAX, dtype=torch.float32)
    return out


def hf_config(spec: TinySpec, tok: Tokenizer) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
        "pad_token_id": tok.token_to_id(PAD),
        "torch_dtype": "bfloat16",
    }


def hf_quant_config() -> dict[str, Any]:
    return {
        "producer": {"name": "modelopt", "version": MODELOPT_FORMAT_VERSION},
        "quantization": {
            "quant_algo": "FP8",
            "kv_cache_quant_algo": None,
            "exclude_modules": ["lm_head"],
        },
        # Not ModelOpt's own key (vLLM reads only "producer" and "quantization"): who made it.
        "made_by": "vllm-matrix tinymodel (random weights, ModelOpt FP8 format)",
    }


def _write_json(path: Path, d: dict[str, Any]) -> None:
    path.write_text(json.dumps(d, indent=2) + "\n")


def write_hf_dir(
    out: Path,
    spec: TinySpec,
    tensors: dict[str, torch.Tensor],
    tok: Tokenizer,
    quant: dict[str, Any] | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(out / "model.safetensors"),
        {"format": "pt"},
    )
    cfg = hf_config(spec, tok)
    _write_json(out / "config.json", cfg)
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": cfg["bos_token_id"],
            "eos_token_id": cfg["eos_token_id"],
            "pad_token_id": cfg["pad_token_id"],
            "do_sample": False,
        },
    )
    tok.save(str(out / "tokenizer.json"))
    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "add_bos_token": True,
            "model_max_length": spec.max_position_embeddings,
            "clean_up_tokenization_spaces": False,
        },
    )
    _write_json(out / "special_tokens_map.json", specials)
    if quant is not None:
        _write_json(out / "hf_quant_config.json", quant)


@dataclass(frozen=True)
class Made:
    bf16: Path
    fp8: Path
    spec: TinySpec
    sizes: dict[str, int]  # bytes of model.safetensors per variant
    sha256: dict[str, str]  # of model.safetensors per variant

    def to_json(self) -> dict[str, Any]:
        return {
            "bf16": str(self.bf16),
            "fp8": str(self.fp8),
            "spec": asdict(self.spec),
            "sizes": self.sizes,
            "sha256": self.sha256,
        }


def make(out: Path, spec: TinySpec | None = None) -> Made:
    """OUT/bf16 and OUT/fp8: the same tiny Llama, unquantized and ModelOpt FP8."""
    spec = spec or TinySpec()
    tok = build_tokenizer(spec.vocab_size)
    if tok.get_vocab_size() > spec.vocab_size:
        raise ValueError(f"tokenizer has {tok.get_vocab_size()} ids > vocab {spec.vocab_size}")
    weights = init_weights(spec)
    amax = calibrate(weights, spec, calibration_ids(spec, tok))
    q = quantize(weights, spec, amax)
    write_hf_dir(out / "bf16", spec, weights, tok)
    write_hf_dir(out / "fp8", spec, q, tok, hf_quant_config())
    sizes, sums = {}, {}
    for k in ("bf16", "fp8"):
        f = out / k / "model.safetensors"
        sizes[k] = f.stat().st_size
        sums[k] = hashlib.sha256(f.read_bytes()).hexdigest()
    return Made(out / "bf16", out / "fp8", spec, sizes, sums)


def spec_of(model_dir: Path) -> TinySpec:
    c = json.loads((model_dir / "config.json").read_text())
    return TinySpec(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"],
        max_position_embeddings=c["max_position_embeddings"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_theta=c["rope_theta"],
    )


def load(model_dir: Path) -> tuple[dict[str, torch.Tensor], Linear, TinySpec]:
    """A checkpoint back from disk, with the Linear that computes it (fp8 or bf16)."""
    w = load_file(str(model_dir / "model.safetensors"))
    lin = fp8_linear(w) if (model_dir / "hf_quant_config.json").exists() else bf16_linear(w)
    return w, lin, spec_of(model_dir)


def greedy(
    weights: dict[str, torch.Tensor], spec: TinySpec, linear: Linear, ids: Sequence[int], n: int
) -> tuple[list[int], list[float]]:
    """n tokens by argmax, with each chosen token's logprob (full recompute per step)."""
    seq, lps = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            lp = torch.log_softmax(forward(weights, spec, seq, linear)[-1], dim=-1)
            t = int(lp.argmax())
            seq.append(t)
            lps.append(float(lp[t]))
    return seq[len(ids) :], lps


def score(
    weights: dict[str, torch.Tensor],
    spec: TinySpec,
    linear: Linear,
    ids: Sequence[int],
    continuation: Sequence[int],
) -> tuple[list[int], list[float]]:
    """Teacher-forced: at each position of `continuation`, this model's argmax and its
    logprob of the given token."""
    seq = list(ids) + list(continuation)
    with torch.no_grad():
        lp = torch.log_softmax(forward(weights, spec, seq, linear), dim=-1)
    rows = lp[len(ids) - 1 : len(seq) - 1]
    top = [int(i) for i in rows.argmax(-1)]
    given = [float(rows[j, t]) for j, t in enumerate(continuation)]
    return top, given


def prompt_ids(model_dir: Path, prompts: Sequence[str]) -> list[list[int]]:
    """The prompts as token ids with the checkpoint's own tokenizer (BOS first): every
    model in a comparison is fed these ids, so no tokenizer wrapper can differ."""
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return [tok.encode(p).ids for p in prompts]


def record(
    model_dir: Path,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    reference: list[modelcheck.Output] | None = None,
) -> list[modelcheck.Output]:
    """The plain-torch run of a checkpoint in the model stage's output format: greedy
    tokens with their logprobs, and (given a reference) the teacher-forced score of the
    reference's tokens. One thread: this model is too small to gain from more."""
    w, lin, spec = load(model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for n, ids in enumerate(prompts):
            toks, lps = greedy(w, spec, lin, ids, max_tokens)
            top: list[int] = []
            forced: list[float] = []
            if reference is not None:
                top, forced = score(w, spec, lin, ids, reference[n].tokens)
            out.append(
                modelcheck.Output(tuple(ids), tuple(toks), tuple(lps), tuple(top), tuple(forced))
            )
        return out
    finally:
        torch.set_num_threads(threads)


def compare_cpu(made: Made, max_tokens: int | None = None) -> modelcheck.Comparison:
    """fp8 against bf16 on CPU with the plain-torch forward: the workload's prompts, greedy,
    and the fp8 model scoring the bf16 tokens teacher-forced."""
    w = modelcheck.load()
    n = max_tokens or w.max_tokens
    ids = prompt_ids(made.bf16, w.prompts)
    ref = record(made.bf16, ids, n)
    cand = record(made.fp8, ids, n, reference=ref)
    return modelcheck.compare(ref, cand)
