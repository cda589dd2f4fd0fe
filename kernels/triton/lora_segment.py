"""Batched LoRA, segment form: runs of consecutive tokens share one adapter slot (prefill chunks).

The runs are cut on the host into BLOCK_M-row tiles that each carry their
slot, so the kernels are plain tiled matmuls: shrink h = scale[s] * x @ a[s]^T,
then expand delta = h @ b[s]^T. Runs on slot -1 make no tiles and stay zero.

Legend: T tokens, Din/Dout feature sizes, S slots, R rank (RP padded to >= 16 for tl.dot),
BM/BN/BK tile sizes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swarm.kernels.triton._checks import check_device, check_shape, dot_precision
from swarm.kernels.triton.lora_gather import check_lora

BLOCK_M, BLOCK_N, BLOCK_K = 32, 64, 32


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, tiles_ptr, scale_ptr, h_ptr, Din, R, stride_xt, stride_as, stride_ar, stride_ht,
                   RP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    tile = tiles_ptr + tl.program_id(0) * 3  # (first row, end row, slot)
    lo, hi, s = tl.load(tile), tl.load(tile + 1), tl.load(tile + 2)
    rows = lo + tl.arange(0, BLOCK_M)
    rows_ok = rows < hi
    r = tl.arange(0, RP)
    rmask = r < R
    kk = tl.arange(0, BLOCK_K)
    a = a_ptr + s * stride_as
    acc = tl.zeros([BLOCK_M, RP], tl.float32)
    for k0 in range(0, Din, BLOCK_K):
        kmask = k0 + kk < Din
        x = tl.load(x_ptr + rows[:, None] * stride_xt + (k0 + kk)[None, :], mask=rows_ok[:, None] & kmask[None, :],
                    other=0.0).to(tl.float32)  # [BM, BK]
        w = tl.load(a + r[None, :] * stride_ar + (k0 + kk)[:, None], mask=rmask[None, :] & kmask[:, None],
                    other=0.0).to(tl.float32)  # [BK, RP]
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    acc = acc * tl.load(scale_ptr + s).to(tl.float32)
    tl.store(h_ptr + rows[:, None] * stride_ht + r[None, :], acc, mask=rows_ok[:, None] & rmask[None, :])


@triton.jit
def _expand_kernel(h_ptr, b_ptr, tiles_ptr, out_ptr, Dout, R, stride_ht, stride_bs, stride_bn, stride_ot,
                   RP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    tile = tiles_ptr + tl.program_id(0) * 3
    lo, hi, s = tl.load(tile), tl.load(tile + 1), tl.load(tile + 2)
    rows = lo + tl.arange(0, BLOCK_M)
    rows_ok = rows < hi
    r = tl.arange(0, RP)
    rmask = r < R
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < Dout
    h = tl.load(h_ptr + rows[:, None] * stride_ht + r[None, :], mask=rows_ok[:, None] & rmask[None, :],
                other=0.0)  # [BM, RP]
    w = tl.load(b_ptr + s * stride_bs + n[None, :] * stride_bn + r[:, None], mask=rmask[:, None] & nmask[None, :],
                other=0.0).to(tl.float32)  # [RP, BN]
    delta = tl.dot(h, w, input_precision=PRECISION)  # [BM, BN]
    tl.store(out_ptr + rows[:, None] * stride_ot + n[None, :], delta.to(out_ptr.dtype.element_ty),
             mask=rows_ok[:, None] & nmask[None, :])


def lora_segment(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, starts: list[int], seg_slots: list[int],
                 scale: torch.Tensor) -> torch.Tensor:
    """Same contract as `swarm.kernels.lora.lora_segment`: segment i is rows starts[i]:starts[i+1] on slot
    seg_slots[i] (-1 for none) -> delta [T, Dout]."""
    op = "triton lora_segment"
    check_lora(op, _shrink_kernel, x, a, b, scale)
    T, (S, R, Din), Dout = x.shape[0], a.shape, b.shape[1]
    check_shape(op, len(starts) == len(seg_slots) + 1, f"{len(starts)} starts for {len(seg_slots)} segments")
    check_shape(op, all(0 <= lo <= hi <= T for lo, hi in zip(starts, starts[1:], strict=False)),
                f"starts {starts[:8]} must be non-decreasing and within [0, T={T}]")
    check_shape(op, all(-1 <= s < S for s in seg_slots), f"slots {seg_slots[:8]} must be -1 or in [0, S={S})")
    out = torch.zeros(T, Dout, dtype=x.dtype, device=x.device)
    # int64 tiles: row offsets times strides cannot overflow
    tiles = [(lo, min(lo + BLOCK_M, hi), s) for s, start, hi in zip(seg_slots, starts[:-1], starts[1:], strict=True)
             if s >= 0 for lo in range(start, hi, BLOCK_M)]
    if not tiles:
        return out
    tiles_t = torch.tensor(tiles, dtype=torch.int64).to(x.device)  # [tiles, 3]
    check_device(op, _shrink_kernel, x, tiles_t)
    RP = max(16, triton.next_power_of_2(R))
    h = torch.empty(T, RP, dtype=torch.float32, device=x.device)  # [T, RP] scaled shrink per token
    precision = dot_precision(torch.float32)  # tiles are widened to float32 before the dots
    _shrink_kernel[(len(tiles),)](x, a, tiles_t, scale, h, Din, R, x.stride(0), a.stride(0), a.stride(1),
                                  h.stride(0), RP=RP, BLOCK_M=BLOCK_M, BLOCK_K=BLOCK_K, PRECISION=precision)
    _expand_kernel[(len(tiles), triton.cdiv(Dout, BLOCK_N))](
        h, b, tiles_t, out, Dout, R, h.stride(0), b.stride(0), b.stride(1), out.stride(0),
        RP=RP, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, PRECISION=precision,
    )
    return out
