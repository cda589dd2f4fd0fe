"""Fused MoE expert FFN: token-expert pairs sorted and aligned by expert, two grouped GEMM kernels.

Sort and align: the T*K (token, expert) pairs are sorted by expert and each
expert's run is padded to a multiple of BLOCK_M, so every BLOCK_M-row tile of
the sorted list belongs to one expert. Kernel 1 computes SwiGLU(x @ gate_up[e]^T)
for a tile, kernel 2 multiplies by down[e]^T and by the routing weight, and
writes one row per pair; the K rows of a token are summed at the end (no
atomics, so the result is deterministic). The padded length is bounded on the
host from T, K and E, so nothing waits for the GPU; tiles past the real end
are marked with expert E and exit at once.

Legend: T tokens, D hidden, E experts, K top-k, I expert width, P padded pairs,
BM/BN/BK tile sizes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swarm.kernels.triton._checks import FLOATS, check_device, check_dtype, check_floats, check_shape, dot_precision

BLOCK_N, BLOCK_K = 64, 32


@triton.jit
def _gate_up_kernel(x_ptr, w_ptr, h_ptr, pairs_ptr, tile_expert_ptr, D, I, E, TK,
                    stride_xt, stride_xd, stride_we, stride_wn, stride_wd, stride_ht,
                    K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    PRECISION: tl.constexpr):
    e = tl.load(tile_expert_ptr + tl.program_id(0))
    if e >= E:  # a tile past the last expert's run
        return
    pair = tl.load(pairs_ptr + tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    valid = pair < TK  # alignment padding holds TK
    token = (pair // K).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] rows of the gate half
    nmask = n < I
    kk = tl.arange(0, BLOCK_K)
    w = w_ptr + e.to(tl.int64) * stride_we
    g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, D, BLOCK_K):
        kmask = k0 + kk < D
        a = tl.load(x_ptr + token[:, None] * stride_xt + (k0 + kk)[None, :] * stride_xd,
                    mask=valid[:, None] & kmask[None, :], other=0.0)  # [BM, BK]
        wmask = kmask[:, None] & nmask[None, :]
        wg = tl.load(w + n[None, :] * stride_wn + (k0 + kk)[:, None] * stride_wd, mask=wmask, other=0.0)  # [BK, BN]
        wu = tl.load(w + (n + I)[None, :] * stride_wn + (k0 + kk)[:, None] * stride_wd, mask=wmask, other=0.0)
        g = tl.dot(a, wg, g, input_precision=PRECISION)
        u = tl.dot(a, wu, u, input_precision=PRECISION)
    h = g * tl.sigmoid(g) * u  # SwiGLU
    out = h_ptr + pair[:, None].to(tl.int64) * stride_ht + n[None, :]
    tl.store(out, h.to(h_ptr.dtype.element_ty), mask=valid[:, None] & nmask[None, :])


@triton.jit
def _down_kernel(h_ptr, w_ptr, y_ptr, rw_ptr, pairs_ptr, tile_expert_ptr, D, I, E, TK,
                 stride_ht, stride_we, stride_wn, stride_wi, stride_yt,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    e = tl.load(tile_expert_ptr + tl.program_id(0))
    if e >= E:
        return
    pair = tl.load(pairs_ptr + tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M))  # [BM]
    valid = pair < TK
    rows = pair.to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] output features
    nmask = n < D
    kk = tl.arange(0, BLOCK_K)
    w = w_ptr + e.to(tl.int64) * stride_we
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, I, BLOCK_K):
        kmask = k0 + kk < I
        a = tl.load(h_ptr + rows[:, None] * stride_ht + (k0 + kk)[None, :],
                    mask=valid[:, None] & kmask[None, :], other=0.0)  # [BM, BK]
        b = tl.load(w + n[None, :] * stride_wn + (k0 + kk)[:, None] * stride_wi,
                    mask=kmask[:, None] & nmask[None, :], other=0.0)  # [BK, BN]
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    acc = acc * tl.load(rw_ptr + rows, mask=valid, other=0.0)[:, None]  # the routing weight of each pair
    tl.store(y_ptr + rows[:, None] * stride_yt + n[None, :], acc, mask=valid[:, None] & nmask[None, :])


def align_by_expert(ids: torch.Tensor, E: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [T, K] -> pairs [P] (pair index t*K+k, or T*K as padding) sorted by expert, each expert's run
    padded to a multiple of block_m; tile_expert [P / block_m] (E for tiles past the end).

    Only torch ops on the ids' device: the padded length P is an upper bound known on the host.
    """
    TK = ids.numel()
    flat = ids.reshape(-1)  # [TK]
    order = flat.argsort(stable=True)
    expert = flat[order]  # expert of each sorted pair
    # scatter_add, not bincount: bincount on CUDA reads the largest id back to the host (a sync)
    one = torch.ones_like(flat, dtype=torch.long)
    counts = torch.zeros(E, dtype=torch.long, device=ids.device).scatter_add_(0, flat.long(), one)  # [E]
    padded = (counts + block_m - 1) // block_m * block_m
    ends = padded.cumsum(0)
    rank = torch.arange(TK, device=ids.device) - (counts.cumsum(0) - counts)[expert]  # place in its expert's run
    dest = (ends - padded)[expert] + rank
    # each expert that has a pair adds at most block_m - 1 rows of padding
    P = triton.cdiv(TK + min(E, TK) * (block_m - 1), block_m) * block_m
    pairs = torch.full((P,), TK, dtype=torch.int32, device=ids.device)
    pairs[dest] = order.to(torch.int32)
    tile_start = torch.arange(0, P, block_m, device=ids.device)
    tile_expert = torch.searchsorted(ends, tile_start, right=True).to(torch.int32)  # E past the last run
    return pairs, tile_expert


def expert_ffn(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor,
               ids: torch.Tensor) -> torch.Tensor:
    """Same contract as `swarm.kernels.moe.expert_ffn`: x [T, D], gate_up [E, 2I, D], down [E, D, I],
    weights/ids [T, K] -> [T, D]."""
    op = "triton moe_expert_ffn"
    check_device(op, _gate_up_kernel, x, gate_up, down, weights, ids)
    check_floats(op, x=x, gate_up=gate_up, down=down)
    check_dtype(op, "ids", ids, (torch.int32, torch.int64))
    check_dtype(op, "weights", weights, FLOATS)
    check_shape(op, x.dim() == 2 and gate_up.dim() == 3 and down.dim() == 3,
                "expected x [T, D], gate_up [E, 2I, D], down [E, D, I]")
    T, D = x.shape
    E, I2, _ = gate_up.shape
    I = I2 // 2
    check_shape(op, I2 % 2 == 0 and gate_up.shape[2] == D and tuple(down.shape) == (E, D, I),
                f"gate_up {tuple(gate_up.shape)} and down {tuple(down.shape)} do not fit x {tuple(x.shape)}")
    check_shape(op, ids.dim() == 2 and ids.shape[0] == T and weights.shape == ids.shape,
                f"weights {tuple(weights.shape)} and ids {tuple(ids.shape)} must both be [T={T}, K]")
    K = ids.shape[1]
    if T == 0:
        return torch.zeros_like(x)
    BLOCK_M = 16 if T * K <= 16 * E else 64  # decode batches spread a few rows over each expert
    pairs, tile_expert = align_by_expert(ids, E, BLOCK_M)
    tiles = tile_expert.numel()
    precision = dot_precision(x.dtype)
    h = torch.empty(T * K, I, dtype=x.dtype, device=x.device)  # [TK, I] SwiGLU output per pair
    _gate_up_kernel[(tiles, triton.cdiv(I, BLOCK_N))](
        x, gate_up, h, pairs, tile_expert, D, I, E, T * K,
        x.stride(0), x.stride(1), gate_up.stride(0), gate_up.stride(1), gate_up.stride(2), h.stride(0),
        K=K, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PRECISION=precision,
    )
    y = torch.empty(T * K, D, dtype=torch.float32, device=x.device)  # [TK, D] weighted expert output per pair
    rw = weights.reshape(-1).to(torch.float32).contiguous()
    _down_kernel[(tiles, triton.cdiv(D, BLOCK_N))](
        h, down, y, rw, pairs, tile_expert, D, I, E, T * K,
        h.stride(0), down.stride(0), down.stride(1), down.stride(2), y.stride(0),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PRECISION=precision,
    )
    return y.view(T, K, D).sum(1).to(x.dtype)
