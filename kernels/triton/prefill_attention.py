"""Paged prefill attention: a chunk of Q new queries of one sequence over its cached prefix and itself.

The keys and values are read straight from the sequence's blocks in the KV
pool (no gathered copy). A program takes one tile of BLOCK_M queries and one
query head; it walks the key positions its queries can see in tiles of BLOCK_N
(each key position finds its block through the block table, so tiles need not
line up with blocks) with an online softmax. Query i sits at absolute position
context_len - Q + i and sees keys j <= its position, and with a sliding window
only keys j > its position - window. Tiles no query of the program can see are
never visited. An int8 pool (QUANT) is read as it is stored: its values are
exact in q's dtype, a key's scale multiplies its score after the dot, a value's
its softmax weight.

Legend: Q queries, H query heads, G key/value heads, d head dim (DP padded),
N pool blocks, bs block size, nb blocks in the table, C context length
(cached prefix + the chunk), QG = H / G query heads per key/value head.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swarm.kernels.triton._checks import (
    check_device,
    check_dtype,
    check_paged_kv,
    check_shape,
    dot_precision,
    interpreted,
)

MAX_HEAD_DIM = 256


@triton.jit
def _prefill_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, table_ptr, o_ptr, scale, Q, C, bs, d, window,
                    stride_qq, stride_qh, stride_kn, stride_ks, stride_kg, stride_vn, stride_vs, stride_vg,
                    stride_sn, stride_ss, stride_oq, stride_oh,
                    QG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DP: tl.constexpr,
                    PRECISION: tl.constexpr, DOT_F32: tl.constexpr, QUANT: tl.constexpr):
    mt, h = tl.program_id(0), tl.program_id(1)
    g = h // QG
    rows = mt * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query indices in the chunk
    rmask = rows < Q
    qpos = C - Q + rows  # absolute positions
    dd = tl.arange(0, DP)
    dmask = dd < d
    q = tl.load(q_ptr + rows[:, None] * stride_qq + h * stride_qh + dd[None, :],
                mask=rmask[:, None] & dmask[None, :], other=0.0)  # [BLOCK_M, DP]
    if DOT_F32:
        q = q.to(tl.float32)
    m = tl.full([BLOCK_M], -1e30, tl.float32)  # finite: padding rows see no key and keep exp(m - m_new) defined
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DP], tl.float32)
    first = C - Q + mt * BLOCK_M  # the tile's first query position
    last = tl.minimum(first + BLOCK_M, C)  # one past the last key any query of the tile sees
    lo = tl.maximum(first - window + 1, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    cols = tl.arange(0, BLOCK_N)
    for start in range(lo, last, BLOCK_N):
        kpos = start + cols  # [BLOCK_N]
        kmask = kpos < C
        blk = tl.load(table_ptr + kpos // bs, mask=kmask, other=0).to(tl.int64)
        slot = kpos % bs
        kv_mask = kmask[:, None] & dmask[None, :]
        k = tl.load(k_ptr + blk[:, None] * stride_kn + slot[:, None] * stride_ks + g * stride_kg + dd[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, DP]
        if DOT_F32:
            k = k.to(tl.float32)
        if QUANT:
            k = k.to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [BLOCK_M, BLOCK_N] fp32
        if QUANT:
            s = s * tl.load(ks_ptr + blk * stride_sn + slot * stride_ss + g, mask=kmask, other=0.0)[None, :]
        visible = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] > qpos[:, None] - window) & kmask[None, :]
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m - m_new)
        v = tl.load(v_ptr + blk[:, None] * stride_vn + slot[:, None] * stride_vs + g * stride_vg + dd[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, DP]
        if DOT_F32:
            v = v.to(tl.float32)
        pv = p
        if QUANT:
            v = v.to(q.dtype)
            pv = p * tl.load(vs_ptr + blk * stride_sn + slot * stride_ss + g, mask=kmask, other=0.0)[None, :]
        acc = tl.dot(pv.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        l = l * alpha + tl.sum(p, axis=1)
        m = m_new
    out = acc / tl.maximum(l, 1e-30)[:, None]
    tl.store(o_ptr + rows[:, None] * stride_oq + h * stride_oh + dd[None, :], out.to(o_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, blocks: torch.Tensor,
                      context_len: int, scale: float, window: int | None = None, k_scale: torch.Tensor | None = None,
                      v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `swarm.kernels.attention.prefill_attention`: q [Q, H, d] (the last Q of the sequence's
    context_len positions), k_cache/v_cache [N, bs, G, d] (int8: with k_scale/v_scale [N, bs, G]), blocks [nb]
    (the sequence's block table) -> [Q, H, d]."""
    op = "triton prefill_attention"
    scales = () if k_scale is None else (k_scale,) if v_scale is None else (k_scale, v_scale)
    check_device(op, _prefill_kernel, q, k_cache, v_cache, blocks, *scales)
    check_dtype(op, "blocks", blocks, (torch.int32, torch.int64))
    H, d, bs, G = check_paged_kv(op, q, k_cache, v_cache, MAX_HEAD_DIM, k_scale, v_scale)
    quant = k_scale is not None
    ks, vs = (k_scale, v_scale) if quant else (k_cache, v_cache)  # unread without QUANT
    Q = q.shape[0]
    check_shape(op, blocks.dim() == 1, f"blocks must be one sequence's block table [nb], got {tuple(blocks.shape)}")
    context_len = int(context_len)
    check_shape(op, Q <= context_len <= blocks.shape[0] * bs,
                f"context_len {context_len} must cover the {Q} queries and fit in {blocks.shape[0]} blocks of {bs}")
    check_shape(op, window is None or window >= 1, f"window must be None or >= 1, got {window}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("blocks", blocks)):
        check_shape(op, t.stride(-1) == 1, f"{name} must be contiguous in its last dimension")
    out = torch.empty_like(q)
    if Q == 0:
        return out
    BLOCK_M = 16 if Q <= 16 else 64
    DP = max(16, triton.next_power_of_2(d))
    BLOCK_N = 64 if DP <= 64 else 32
    # the interpreter's tl.dot gets bfloat16 operands wrong (triton 3.9): it multiplies in float32 there instead
    dot_f32 = q.dtype == torch.bfloat16 and interpreted(_prefill_kernel)
    _prefill_kernel[(triton.cdiv(Q, BLOCK_M), H)](
        q, k_cache, v_cache, ks, vs, blocks, out, float(scale), Q, context_len, bs, d,
        context_len + 1 if window is None else int(window),
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), bs * G if quant else 0, G if quant else 0,
        out.stride(0), out.stride(1),
        QG=H // G, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, DP=DP, PRECISION="ieee" if dot_f32 else dot_precision(q.dtype),
        DOT_F32=dot_f32, QUANT=quant,
    )
    return out
