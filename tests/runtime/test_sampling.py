"""The per-request sampler: its draws follow the filtered distribution, and a seed fixes them."""

import collections

import torch

from swarm.runtime.sampling import Sampler, SamplingParams

LOGITS = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf"), 0.5])


def frequencies(params: SamplingParams, n: int = 20_000) -> torch.Tensor:
    sampler = Sampler(params)
    counts = collections.Counter(sampler(LOGITS) for _ in range(n))
    return torch.tensor([counts[i] / n for i in range(len(LOGITS))])


def test_draws_follow_the_softmax_at_the_temperature():
    for temperature in (1.0, 0.5):
        expected = (LOGITS / temperature).softmax(-1)
        got = frequencies(SamplingParams(temperature=temperature, seed=1))
        assert (got - expected).abs().max() < 0.015, (temperature, got, expected)
        assert got[4] == 0  # a token the model rules out is never drawn


def test_top_k_and_top_p_keep_only_their_tokens_in_proportion():
    got = frequencies(SamplingParams(top_k=2, seed=2))
    expected = torch.zeros(6)
    expected[[0, 1]] = LOGITS[[0, 1]].softmax(-1)
    assert (got - expected).abs().max() < 0.015
    probs = LOGITS.softmax(-1)  # 0.53, 0.20, 0.07, 0.03, 0, 0.12: the nucleus for 0.8 is tokens 0, 1, 5
    got = frequencies(SamplingParams(top_p=0.8, seed=3))
    expected = torch.zeros(6)
    expected[[0, 1, 5]] = probs[[0, 1, 5]] / probs[[0, 1, 5]].sum()
    assert (got - expected).abs().max() < 0.015


def test_a_seed_fixes_the_draws():
    runs = [[Sampler(SamplingParams(seed=s))(LOGITS) for _ in range(50)] for s in (7, 7, 8)]
    assert runs[0] == runs[1] != runs[2]
