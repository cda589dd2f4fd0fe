"""Mixture-of-experts routing and the grouped expert FFN (torch reference and CPU path).

Legend: T tokens, D hidden, E experts, K top-k, I expert width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def route(logits: torch.Tensor, top_k: int, mode: str, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick K experts per token. logits [T, E] -> weights [T, K] float32, ids [T, K] int64.

    mode "softmax_topk" (Mixtral, Qwen, OLMoE): softmax over all experts, then top-k,
    optionally renormalised to sum to one. mode "topk_softmax" (Granite): top-k on the
    raw logits, softmax over the K chosen.
    """
    logits = logits.float()
    if mode == "topk_softmax":
        top, ids = logits.topk(top_k, dim=-1)
        return top.softmax(dim=-1), ids
    probs = logits.softmax(dim=-1)
    top, ids = probs.topk(top_k, dim=-1)
    if renormalize:
        top = top / top.sum(dim=-1, keepdim=True)
    return top, ids


def expert_ffn(
    x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """SwiGLU experts over grouped tokens. x [T, D], gate_up [E, 2I, D], down [E, D, I] -> [T, D].

    Token-expert pairs are sorted by expert so each expert runs one matmul over all
    its tokens (the torch form of a fused-MoE kernel's sort-and-align); the routing
    weight is applied to each expert's output before it is scattered back.
    """
    T, K = ids.shape
    flat_ids = ids.reshape(-1)  # [T*K]
    order = flat_ids.argsort(stable=True)
    token_of = order // K  # token index of each sorted pair
    weight_of = weights.reshape(-1)[order].to(x.dtype)
    counts = torch.bincount(flat_ids, minlength=gate_up.shape[0]).tolist()
    out = torch.zeros_like(x)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        rows = token_of[start : start + n]
        g, u = F.linear(x[rows], gate_up[e]).chunk(2, dim=-1)  # [n, I] each
        y = F.linear(F.silu(g) * u, down[e]) * weight_of[start : start + n, None]  # [n, D]
        out.index_add_(0, rows, y)
        start += n
    return out
