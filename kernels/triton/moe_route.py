"""MoE routing in one pass over the router logits: softmax and top-k (either order), in registers.

Legend: T tokens, E experts (EP padded to a power of two), K top-k (KP padded).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swarm.kernels.triton._checks import FLOATS, check_device, check_dtype, check_shape

MAX_EXPERTS = 1024  # one row of logits lives in registers


@triton.jit
def _route_kernel(logits_ptr, w_ptr, ids_ptr, T, E, stride_t, stride_e,
                  K: tl.constexpr, KP: tl.constexpr, EP: tl.constexpr, BLOCK_T: tl.constexpr,
                  SOFTMAX_FIRST: tl.constexpr, RENORMALIZE: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BT]
    cols = tl.arange(0, EP)  # [EP]
    kcols = tl.arange(0, KP)  # [KP]
    rmask = rows < T
    ptrs = logits_ptr + rows[:, None].to(tl.int64) * stride_t + cols[None, :] * stride_e
    x = tl.load(ptrs, mask=rmask[:, None] & (cols[None, :] < E), other=float("-inf")).to(tl.float32)  # [BT, EP]
    x = tl.where(rmask[:, None], x, 0.0)  # rows past T: finite, so no NaNs are computed (nor stored)
    if SOFTMAX_FIRST:
        p = tl.exp(x - tl.max(x, axis=1)[:, None])
        x = p / tl.sum(p, axis=1)[:, None]
    # top-k by K rounds of arg-max; a tie goes to the lower expert id
    top = tl.full([BLOCK_T, KP], float("-inf"), tl.float32)  # [BT, KP]
    ids = tl.zeros([BLOCK_T, KP], tl.int64)
    for k in tl.static_range(K):
        best = tl.max(x, axis=1)  # [BT]
        arg = tl.min(tl.where(x == best[:, None], cols[None, :], EP), axis=1)  # [BT]
        top = tl.where(kcols[None, :] == k, best[:, None], top)
        ids = tl.where(kcols[None, :] == k, arg[:, None].to(tl.int64), ids)
        x = tl.where(cols[None, :] == arg[:, None], float("-inf"), x)
    if SOFTMAX_FIRST:
        if RENORMALIZE:
            top = top / tl.sum(tl.where(kcols[None, :] < K, top, 0.0), axis=1)[:, None]
    else:  # softmax over the K chosen logits; padded columns are -inf and weigh nothing
        e = tl.exp(top - tl.max(top, axis=1)[:, None])
        top = e / tl.sum(e, axis=1)[:, None]
    out = rows[:, None] * K + kcols[None, :]
    omask = rmask[:, None] & (kcols[None, :] < K)
    tl.store(w_ptr + out, top, mask=omask)
    tl.store(ids_ptr + out, ids, mask=omask)


def route(logits: torch.Tensor, top_k: int, mode: str, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `swarm.kernels.moe.route`: logits [T, E] -> weights [T, K] float32, ids [T, K] int64."""
    op = "triton moe_route"
    check_device(op, _route_kernel, logits)
    check_dtype(op, "logits", logits, FLOATS)
    check_shape(op, logits.dim() == 2, f"logits must be [T, E], got shape {tuple(logits.shape)}")
    T, E = logits.shape
    check_shape(op, 1 <= E <= MAX_EXPERTS, f"{E} experts; supported: 1 to {MAX_EXPERTS}")
    check_shape(op, 1 <= top_k <= E, f"top_k={top_k} with {E} experts")
    if mode not in ("softmax_topk", "topk_softmax"):
        raise ValueError(f"{op}: unknown routing mode {mode!r}")
    weights = torch.empty(T, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int64, device=logits.device)
    if T == 0:
        return weights, ids
    EP = triton.next_power_of_2(E)
    BLOCK_T = max(1, min(64, 4096 // EP, triton.next_power_of_2(T)))  # about 4K logits per program
    _route_kernel[(triton.cdiv(T, BLOCK_T),)](
        logits, weights, ids, T, E, logits.stride(0), logits.stride(1),
        K=top_k, KP=triton.next_power_of_2(top_k), EP=EP, BLOCK_T=BLOCK_T,
        SOFTMAX_FIRST=mode == "softmax_topk", RENORMALIZE=renormalize,
    )
    return weights, ids
