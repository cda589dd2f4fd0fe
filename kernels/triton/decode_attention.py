"""Paged decode attention: one new query per sequence over its blocks in the KV pool (GQA, split-K).

A program takes one sequence, one key/value head and one slice of the
sequence's blocks: the H/G query heads that share the key/value head ride
along as rows, so each key block is read once for all of them. Slices keep a
GPU busy when there are few sequences (flash-decoding); each writes its
partial output and log-sum-exp, and a second kernel merges the slices.
Blocks with no visible key are skipped. An int8 pool (QUANT) is read as it is
stored: a key's scale multiplies its score after the dot product, a value's its
softmax weight.

Legend: B sequences, H query heads, G key/value heads, d head dim (DP padded),
N pool blocks, bs block size (BSP padded), nb blocks per table, S = nb * bs,
QG = H / G query heads per key/value head (QGP padded), SP slices.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swarm.kernels.triton._checks import check_device, check_dtype, check_paged_kv, check_shape

MAX_HEAD_DIM = 256
MIN_BLOCKS_PER_SLICE = 4


@triton.jit
def _partial_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, table_ptr, mask_ptr, o_ptr, lse_ptr, scale, nb, bs, d,
                    per_slice, stride_qb, stride_qh, stride_kn, stride_ks, stride_kg, stride_vn, stride_vs, stride_vg,
                    stride_sn, stride_ss, stride_tb, stride_mb, stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
                    QG: tl.constexpr, QGP: tl.constexpr, BSP: tl.constexpr, DP: tl.constexpr, QUANT: tl.constexpr):
    b, g, sl = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    heads = g * QG + tl.arange(0, QGP)  # [QGP]
    hmask = tl.arange(0, QGP) < QG
    dd = tl.arange(0, DP)
    dmask = dd < d
    pos = tl.arange(0, BSP)
    pmask = pos < bs
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + dd[None, :],
                mask=hmask[:, None] & dmask[None, :], other=0.0).to(tl.float32) * scale  # [QGP, DP]
    m = tl.full([QGP], -1e30, tl.float32)  # finite: a fully masked slice keeps exp(m - m_new) defined
    l = tl.zeros([QGP], tl.float32)
    acc = tl.zeros([QGP, DP], tl.float32)
    for j in range(sl * per_slice, tl.minimum(nb, (sl + 1) * per_slice)):
        visible = tl.load(mask_ptr + b * stride_mb + j * bs + pos, mask=pmask, other=0) != 0  # [BSP]
        if tl.max(visible.to(tl.int32), axis=0) > 0:
            blk = tl.load(table_ptr + b * stride_tb + j).to(tl.int64)
            kv_mask = pmask[:, None] & dmask[None, :]
            k = tl.load(k_ptr + blk * stride_kn + pos[:, None] * stride_ks + g * stride_kg + dd[None, :],
                        mask=kv_mask, other=0.0).to(tl.float32)  # [BSP, DP]
            s = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # [QGP, BSP]
            if QUANT:
                s = s * tl.load(ks_ptr + blk * stride_sn + pos * stride_ss + g, mask=pmask, other=0.0)[None, :]
            s = tl.where(visible[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + blk * stride_vn + pos[:, None] * stride_vs + g * stride_vg + dd[None, :],
                        mask=kv_mask, other=0.0).to(tl.float32)  # [BSP, DP]
            pv = p
            if QUANT:
                pv = p * tl.load(vs_ptr + blk * stride_sn + pos * stride_ss + g, mask=pmask, other=0.0)[None, :]
            acc = acc * alpha[:, None] + tl.sum(pv[:, :, None] * v[None, :, :], axis=1)
            l = l * alpha + tl.sum(p, axis=1)
            m = m_new
    out = acc / tl.maximum(l, 1e-30)[:, None]  # a slice with no visible key writes zeros and lse ~ -1e30
    omask = hmask[:, None] & dmask[None, :]
    tl.store(o_ptr + b * stride_ob + heads[:, None] * stride_oh + sl * stride_os + dd[None, :], out, mask=omask)
    tl.store(lse_ptr + b * stride_lb + heads * stride_lh + sl, m + tl.log(tl.maximum(l, 1e-30)), mask=hmask)


@triton.jit
def _merge_kernel(o_ptr, lse_ptr, out_ptr, H, d, slices, stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
                  stride_outb, stride_outh, SP: tl.constexpr, DP: tl.constexpr):
    b, h = tl.program_id(0), tl.program_id(1)
    sl = tl.arange(0, SP)
    smask = sl < slices
    dd = tl.arange(0, DP)
    dmask = dd < d
    lse = tl.load(lse_ptr + b * stride_lb + h * stride_lh + sl, mask=smask, other=float("-inf"))  # [SP]
    w = tl.exp(lse - tl.max(lse, axis=0))
    w = w / tl.sum(w, axis=0)
    o = tl.load(o_ptr + b * stride_ob + h * stride_oh + sl[:, None] * stride_os + dd[None, :],
                mask=smask[:, None] & dmask[None, :], other=0.0)  # [SP, DP]
    out = tl.sum(o * w[:, None], axis=0)
    tl.store(out_ptr + b * stride_outb + h * stride_outh + dd, out.to(out_ptr.dtype.element_ty), mask=dmask)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                     mask: torch.Tensor, scale: float, k_scale: torch.Tensor | None = None,
                     v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `swarm.kernels.attention.decode_attention`: q [B, H, d], k_cache/v_cache [N, bs, G, d]
    (int8: with k_scale/v_scale [N, bs, G]), block_table [B, nb], mask [B, nb * bs] (True where a key is
    visible) -> [B, H, d]."""
    op = "triton decode_attention"
    scales = () if k_scale is None else (k_scale,) if v_scale is None else (k_scale, v_scale)
    check_device(op, _partial_kernel, q, k_cache, v_cache, block_table, mask, *scales)
    check_dtype(op, "block_table", block_table, (torch.int32, torch.int64))
    check_dtype(op, "mask", mask, (torch.bool,))
    H, d, bs, G = check_paged_kv(op, q, k_cache, v_cache, MAX_HEAD_DIM, k_scale, v_scale)
    quant = k_scale is not None
    ks, vs = (k_scale, v_scale) if quant else (k_cache, v_cache)  # unread without QUANT
    B = q.shape[0]
    check_shape(op, block_table.dim() == 2 and block_table.shape[0] == B, f"block_table must be [B={B}, nb]")
    nb = block_table.shape[1]
    check_shape(op, tuple(mask.shape) == (B, nb * bs), f"mask must be [B={B}, nb * bs={nb * bs}]")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("mask", mask), ("block_table", block_table)):
        check_shape(op, t.stride(-1) == 1, f"{name} must be contiguous in its last dimension")
    check_shape(op, k_cache.stride(2) == d and v_cache.stride(2) == d, "each key/value block must be [bs, G, d] dense")
    out = torch.empty_like(q)
    if B == 0:
        return out
    # enough slices to give the GPU about 256 programs, but at least a few blocks each
    slices = max(1, min(triton.cdiv(nb, MIN_BLOCKS_PER_SLICE), triton.cdiv(256, B * G)))
    per_slice = triton.cdiv(nb, slices)
    slices = triton.cdiv(nb, per_slice)
    o = torch.empty(B, H, slices, d, dtype=torch.float32, device=q.device)  # [B, H, SP, d] per-slice outputs
    lse = torch.empty(B, H, slices, dtype=torch.float32, device=q.device)
    DP = triton.next_power_of_2(d)
    _partial_kernel[(B, G, slices)](
        q, k_cache, v_cache, ks, vs, block_table, mask, o, lse, float(scale), nb, bs, d, per_slice,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), bs * G if quant else 0, G if quant else 0,
        block_table.stride(0), mask.stride(0), o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1),
        QG=H // G, QGP=triton.next_power_of_2(H // G), BSP=triton.next_power_of_2(bs), DP=DP, QUANT=quant,
    )
    _merge_kernel[(B, H)](
        o, lse, out, H, d, slices, o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), SP=triton.next_power_of_2(slices), DP=DP,
    )
    return out
