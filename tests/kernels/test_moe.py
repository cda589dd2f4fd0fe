"""The torch MoE kernels against per-token references."""

import pytest
import torch

from swarm.kernels.moe import expert_ffn, route


def per_token_reference(x, gate_up, down, weights, ids):
    """Each token through each of its experts, one at a time."""
    ref = torch.zeros_like(x)
    for t in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            g, u = (gate_up[ids[t, j]] @ x[t]).chunk(2)
            ref[t] += weights[t, j] * (down[ids[t, j]] @ (torch.nn.functional.silu(g) * u))
    return ref


@pytest.mark.parametrize("routing", ["even", "skewed"])
def test_grouped_expert_ffn_matches_a_per_token_reference(routing):
    g = torch.Generator().manual_seed(0)
    T, D, I, E, K = 40, 16, 24, 6, 2
    x = torch.randn(T, D, generator=g)
    gate_up, down = torch.randn(E, 2 * I, D, generator=g), torch.randn(E, D, I, generator=g)
    if routing == "even":
        ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    else:  # nearly every token on experts 0 and 1: the padded batched form would waste work
        ids = torch.tensor([[0, 1]] * (T - 1) + [[4, 5]])
    weights = torch.rand(T, K, generator=g)
    ref = per_token_reference(x, gate_up, down, weights, ids)
    assert torch.allclose(expert_ffn(x, gate_up, down, weights, ids), ref, atol=1e-4, rtol=1e-4)


def test_routing_modes():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    w, ids = route(logits, 2, "softmax_topk", renormalize=False)
    p = logits.softmax(-1)[0]
    assert ids.tolist() == [[0, 1]] and torch.allclose(w, p[:2][None])
    w, _ = route(logits, 2, "softmax_topk", renormalize=True)
    assert torch.allclose(w.sum(-1), torch.ones(1))
    w, ids = route(logits, 2, "topk_softmax", renormalize=False)
    assert ids.tolist() == [[0, 1]] and torch.allclose(w, logits[:, :2].softmax(-1))


@pytest.mark.parametrize("T", [1, 2, 3])
def test_expert_ffn_for_a_few_tokens(T):
    g = torch.Generator().manual_seed(T)
    D, I, E, K = 16, 24, 6, 2
    x = torch.randn(T, D, generator=g)
    gate_up, down = torch.randn(E, 2 * I, D, generator=g), torch.randn(E, D, I, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    weights = torch.rand(T, K, generator=g)
    ref = per_token_reference(x, gate_up, down, weights, ids)
    assert torch.allclose(expert_ffn(x, gate_up, down, weights, ids), ref, atol=1e-4, rtol=1e-4)
