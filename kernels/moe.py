"""Mixture-of-experts routing and the grouped expert FFN (torch reference and CPU path).

Legend: T tokens, D hidden, E experts, K top-k, I expert width.
"""

from __future__ import annotations

from collections.abc import Callable

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
    x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
    down_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """SwiGLU experts over grouped tokens. x [T, D], gate_up [E, 2I, D], down [E, D, I] -> [T, D]. `down_input`
    maps the activations silu(gate) * up before the down projection (a quantised one rounds them).

    Token-expert pairs are sorted by expert (the torch form of a fused-MoE
    kernel's sort-and-align) and each expert's tokens go through its weights in
    one matmul; the routing weight scales each expert output before it is added
    back to its token. When the groups are about even, all experts run in one
    batched matmul over groups padded to the largest (far faster than one small
    matmul per expert on the CPU); a skewed routing falls back to one matmul per
    expert so padding never multiplies the work.
    """
    T, K = ids.shape
    E = gate_up.shape[0]
    act = down_input or (lambda h: h)
    if T * K <= 4:  # a decode step of one or two tokens: sorting costs more than it saves
        out = torch.zeros_like(x)
        for (t, j), e in zip(((t, j) for t in range(T) for j in range(K)), ids.reshape(-1).tolist(), strict=True):
            g, u = F.linear(x[t], gate_up[e]).chunk(2, dim=-1)  # [I] each
            out[t] += F.linear(act(F.silu(g) * u), down[e]) * weights[t, j].to(x.dtype)
        return out
    flat = ids.reshape(-1)  # [T*K]
    order = flat.argsort(stable=True)
    expert = flat[order]  # expert of each sorted pair
    token = order // K  # token of each sorted pair
    weight = weights.reshape(-1)[order].to(x.dtype)
    counts = torch.bincount(flat, minlength=E)
    widest, active = int(counts.max()), int((counts > 0).sum())
    # The batched form reads every expert's weights, so it pays only when (nearly) all
    # experts are hit and the groups are about even; otherwise loop over the hit ones.
    if 4 * active >= 3 * E and E * widest <= 2 * T * K + 4 * E:
        rank = torch.arange(T * K, device=x.device) - (counts.cumsum(0) - counts)[expert]  # slot in its group
        grouped = x.new_zeros(E, widest, x.shape[1])  # [E, n, D]
        grouped[expert, rank] = x[token]
        g, u = torch.bmm(grouped, gate_up.transpose(1, 2)).chunk(2, dim=-1)  # [E, n, I] each
        y = torch.bmm(act(F.silu(g) * u), down.transpose(1, 2))[expert, rank]  # [T*K, D] in sorted order
        return torch.zeros_like(x).index_add_(0, token, y * weight[:, None])
    out = torch.zeros_like(x)
    start = 0
    for e, n in enumerate(counts.tolist()):
        if n == 0:
            continue
        rows = token[start : start + n]
        g, u = F.linear(x[rows], gate_up[e]).chunk(2, dim=-1)  # [n, I] each
        out.index_add_(0, rows, F.linear(act(F.silu(g) * u), down[e]) * weight[start : start + n, None])
        start += n
    return out
