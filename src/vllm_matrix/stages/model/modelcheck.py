"""Comparing two models' greedy outputs (no torch needed): the model stage's judgement.

A run's outputs are plain JSON (what modelstage's worker writes, or tinymodel.record on
CPU): per prompt the prompt's token ids, the greedy tokens, each chosen token's logprob,
and optionally a teacher-forced score of a reference continuation (the model's own top-1
and its logprob of each reference token). The workload and tolerances are data
(knowledge/data/model.toml), with the argument for each bound beside it.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import datafiles

DATA = datafiles.data_path("model.toml")


@dataclass(frozen=True)
class Tolerance:
    min_top1_agreement: float
    max_mean_abs_dlogprob: float


@dataclass(frozen=True)
class Workload:
    prompts: tuple[str, ...]
    max_tokens: int
    throughput_requests: int
    fp8_vs_bf16: Tolerance
    vllm_vs_reference: Tolerance


def load(path: Path = DATA) -> Workload:
    d = tomllib.loads(path.read_text())
    w, t = d["workload"], d["tolerance"]
    return Workload(
        prompts=tuple(w["prompts"]),
        max_tokens=int(w["max_tokens"]),
        throughput_requests=int(w["throughput_requests"]),
        fp8_vs_bf16=Tolerance(**t["fp8_vs_bf16"]),
        vllm_vs_reference=Tolerance(**t["vllm_vs_reference"]),
    )


@dataclass(frozen=True)
class Output:
    """One prompt's greedy output; `forced_*`: this model scoring a reference continuation."""

    prompt_ids: tuple[int, ...]
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    forced_top1: tuple[int, ...] = ()
    forced_logprobs: tuple[float, ...] = ()

    @staticmethod
    def from_json(d: dict[str, Any]) -> Output:
        return Output(
            tuple(d["prompt_ids"]),
            tuple(d["tokens"]),
            tuple(float(x) for x in d["logprobs"]),
            tuple(d.get("forced_top1", ())),
            tuple(float(x) for x in d.get("forced_logprobs", ())),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}


def read_outputs(doc: dict[str, Any]) -> list[Output]:
    return [Output.from_json(o) for o in doc["outputs"]]


@dataclass(frozen=True)
class Comparison:
    prompts: int
    tokens: int  # positions compared (prompts x max_tokens)
    identical_sequences: int
    common_prefix: tuple[int, ...]  # per prompt: tokens equal before the first divergence
    prefix_agreement: float  # sum(common_prefix) / tokens
    prefix_max_abs_dlogprob: float  # same context, same token: the logprobs' difference
    forced_top1_agreement: float | None  # candidate's top-1 == reference token, teacher-forced
    forced_mean_abs_dlogprob: float | None
    forced_max_abs_dlogprob: float | None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["common_prefix"] = list(self.common_prefix)
        return d


def compare(ref: list[Output], cand: list[Output]) -> Comparison:
    """`cand` against `ref`, prompt by prompt (same prompts, same order)."""
    if len(ref) != len(cand):
        raise ValueError(f"{len(ref)} reference outputs, {len(cand)} candidate outputs")
    prefixes, dl_prefix = [], [0.0]
    agree = n_forced = 0
    dl_forced: list[float] = []
    total = 0
    for r, c in zip(ref, cand, strict=True):
        if r.prompt_ids != c.prompt_ids:
            raise ValueError("reference and candidate were given different prompts")
        n = 0
        while n < min(len(r.tokens), len(c.tokens)) and r.tokens[n] == c.tokens[n]:
            dl_prefix.append(abs(r.logprobs[n] - c.logprobs[n]))
            n += 1
        prefixes.append(n)
        total += len(r.tokens)
        if c.forced_top1:
            if len(c.forced_top1) != len(r.tokens) or len(c.forced_logprobs) != len(r.tokens):
                raise ValueError("the teacher-forced score does not cover the reference tokens")
            agree += sum(a == b for a, b in zip(c.forced_top1, r.tokens, strict=True))
            dl_forced += [abs(a - b) for a, b in zip(c.forced_logprobs, r.logprobs, strict=True)]
            n_forced += len(r.tokens)
    return Comparison(
        prompts=len(ref),
        tokens=total,
        identical_sequences=sum(1 for r, c in zip(ref, cand, strict=True) if r.tokens == c.tokens),
        common_prefix=tuple(prefixes),
        prefix_agreement=round(sum(prefixes) / total, 4) if total else 0.0,
        prefix_max_abs_dlogprob=round(max(dl_prefix), 4),
        forced_top1_agreement=round(agree / n_forced, 4) if n_forced else None,
        forced_mean_abs_dlogprob=round(sum(dl_forced) / n_forced, 4) if n_forced else None,
        forced_max_abs_dlogprob=round(max(dl_forced), 4) if n_forced else None,
    )


def within(c: Comparison, tol: Tolerance) -> list[str]:
    """What breaks the tolerance (empty: within it). Needs the teacher-forced numbers."""
    if c.forced_top1_agreement is None or c.forced_mean_abs_dlogprob is None:
        return ["no teacher-forced score to judge (the candidate did not score the reference)"]
    bad = []
    if c.forced_top1_agreement < tol.min_top1_agreement:
        bad.append(f"top-1 agreement {c.forced_top1_agreement:.3f} < {tol.min_top1_agreement}")
    if c.forced_mean_abs_dlogprob > tol.max_mean_abs_dlogprob:
        bad.append(
            f"mean |dlogprob| {c.forced_mean_abs_dlogprob:.3f} > {tol.max_mean_abs_dlogprob}"
        )
    return bad
