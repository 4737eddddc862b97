"""modelcheck: the comparison and the tolerance the model stage judges by (no torch)."""

from __future__ import annotations

import pytest

from vllm_matrix.stages.model import modelcheck
from vllm_matrix.stages.model.modelcheck import Output, Tolerance


def out(
    tokens: list[int],
    lps: list[float],
    top: tuple[int, ...] | list[int] = (),
    forced: tuple[float, ...] | list[float] = (),
) -> Output:
    return Output((1, 5), tuple(tokens), tuple(lps), tuple(top), tuple(forced))


def test_workload_and_tolerances_from_the_data_file() -> None:
    w = modelcheck.load()
    assert len(w.prompts) == 8 and w.max_tokens == 32 and w.throughput_requests >= len(w.prompts)
    assert 0 < w.fp8_vs_bf16.min_top1_agreement < w.vllm_vs_reference.min_top1_agreement <= 1
    assert w.vllm_vs_reference.max_mean_abs_dlogprob < w.fp8_vs_bf16.max_mean_abs_dlogprob


def test_greedy_prefix_and_teacher_forced_numbers() -> None:
    ref = [out([7, 8, 9, 10], [-0.1, -0.2, -0.3, -0.4]), out([3, 3, 3, 3], [-1.0] * 4)]
    cand = [
        # diverges at position 2; scores ref's tokens: top-1 wrong at position 2
        out([7, 8, 11, 12], [-0.15, -0.2, -0.5, -0.1], [7, 8, 11, 10], [-0.15, -0.2, -0.9, -0.4]),
        out([3, 3, 3, 3], [-1.0] * 4, [3, 3, 3, 3], [-1.1] * 4),
    ]
    c = modelcheck.compare(ref, cand)
    assert c.prompts == 2 and c.tokens == 8
    assert c.common_prefix == (2, 4) and c.identical_sequences == 1
    assert c.prefix_agreement == 0.75
    assert c.prefix_max_abs_dlogprob == pytest.approx(0.05)
    assert c.forced_top1_agreement == 0.875
    assert c.forced_max_abs_dlogprob == pytest.approx(0.6)
    assert c.forced_mean_abs_dlogprob == pytest.approx(round((0.05 + 0.6 + 0.4) / 8, 4))
    assert modelcheck.within(c, Tolerance(0.8, 0.2)) == []
    bad = modelcheck.within(c, Tolerance(0.9, 0.1))
    assert len(bad) == 2 and "0.875 < 0.9" in bad[0] and "> 0.1" in bad[1]


def test_without_a_teacher_forced_score_nothing_is_judged() -> None:
    ref = [out([1, 2], [-0.1, -0.1])]
    c = modelcheck.compare(ref, [out([1, 2], [-0.1, -0.1])])
    assert c.forced_top1_agreement is None
    assert modelcheck.within(c, Tolerance(0.5, 1.0)) != []


def test_mismatched_runs_are_refused() -> None:
    ref = [out([1, 2], [-0.1, -0.1])]
    with pytest.raises(ValueError, match="outputs"):
        modelcheck.compare(ref, ref * 2)
    other = [Output((9,), (1, 2), (-0.1, -0.1))]
    with pytest.raises(ValueError, match="different prompts"):
        modelcheck.compare(ref, other)
    with pytest.raises(ValueError, match="cover"):
        modelcheck.compare(ref, [out([1, 2], [-0.1, -0.1], [1], [-0.1])])


def test_output_json_round_trip() -> None:
    o = out([1, 2], [-0.1, -0.2], [1, 2], [-0.1, -0.3])
    assert Output.from_json(o.to_json()) == o
