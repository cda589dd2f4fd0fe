"""Batched LoRA, gather form: every token picks its own adapter slot (decode batches).

Two kernels, as in multi-LoRA serving: shrink h = scale[s] * x @ a[s]^T per
token, then expand delta = h @ b[s]^T per token and output tile. Tokens on
slot -1 (the base model) do no work and get zeros.

Legend: T tokens, Din/Dout feature sizes, S slots, R rank (RP padded), BN/BK tile sizes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from swarm.kernels.triton._checks import FLOATS, check_device, check_dtype, check_shape

MAX_RANK = 256
BLOCK_N, BLOCK_K = 64, 64


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, slots_ptr, scale_ptr, h_ptr, Din, R,
                   stride_xt, stride_as, stride_ar, stride_ht, RP: tl.constexpr, BLOCK_K: tl.constexpr):
    t = tl.program_id(0)
    s = tl.load(slots_ptr + t)
    if s >= 0:
        r = tl.arange(0, RP)
        rmask = r < R
        kk = tl.arange(0, BLOCK_K)
        a = a_ptr + s.to(tl.int64) * stride_as
        acc = tl.zeros([RP], tl.float32)
        for k0 in range(0, Din, BLOCK_K):
            kmask = k0 + kk < Din
            x = tl.load(x_ptr + t.to(tl.int64) * stride_xt + k0 + kk, mask=kmask, other=0.0).to(tl.float32)  # [BK]
            w = tl.load(a + r[:, None] * stride_ar + (k0 + kk)[None, :], mask=rmask[:, None] & kmask[None, :],
                        other=0.0).to(tl.float32)  # [RP, BK]
            acc += tl.sum(w * x[None, :], axis=1)
        acc = acc * tl.load(scale_ptr + s).to(tl.float32)
        tl.store(h_ptr + t.to(tl.int64) * stride_ht + r, acc, mask=rmask)


@triton.jit
def _expand_kernel(h_ptr, b_ptr, slots_ptr, out_ptr, Dout, R, stride_ht, stride_bs, stride_bn, stride_ot,
                   RP: tl.constexpr, BLOCK_N: tl.constexpr):
    t = tl.program_id(0)
    s = tl.load(slots_ptr + t)
    if s >= 0:
        r = tl.arange(0, RP)
        rmask = r < R
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = n < Dout
        h = tl.load(h_ptr + t.to(tl.int64) * stride_ht + r, mask=rmask, other=0.0)  # [RP]
        w = tl.load(b_ptr + s.to(tl.int64) * stride_bs + n[:, None] * stride_bn + r[None, :],
                    mask=nmask[:, None] & rmask[None, :], other=0.0).to(tl.float32)  # [BN, RP]
        delta = tl.sum(w * h[None, :], axis=1)
        tl.store(out_ptr + t.to(tl.int64) * stride_ot + n, delta.to(out_ptr.dtype.element_ty), mask=nmask)


def check_lora(op: str, kernel: object, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               scale: torch.Tensor) -> None:
    """The checks both LoRA forms share: x [T, Din], a [S, R, Din], b [S, Dout, R], scale [S]."""
    check_device(op, kernel, x, a, b, scale)
    check_dtype(op, "x", x, FLOATS)
    check_dtype(op, "a", a, FLOATS)
    check_shape(op, a.dtype == b.dtype, f"a and b must share a dtype, got {a.dtype} and {b.dtype}")
    check_dtype(op, "scale", scale, FLOATS)
    check_shape(op, x.dim() == 2 and a.dim() == 3 and b.dim() == 3 and scale.dim() == 1,
                "expected x [T, Din], a [S, R, Din], b [S, Dout, R], scale [S]")
    S, R, Din = a.shape
    check_shape(op, Din == x.shape[1] and b.shape[0] == S and b.shape[2] == R and scale.shape[0] == S,
                f"a {tuple(a.shape)}, b {tuple(b.shape)} and scale {tuple(scale.shape)} do not fit x "
                f"{tuple(x.shape)}")
    check_shape(op, 1 <= R <= MAX_RANK, f"rank {R}; supported: 1 to {MAX_RANK}")
    for name, t in (("x", x), ("a", a), ("b", b)):
        check_shape(op, t.stride(-1) == 1, f"{name} must be contiguous in its last dimension")


def lora_gather(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, slots: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Same contract as `swarm.kernels.lora.lora_gather`: x [T, Din], slots [T] (-1 for none) -> [T, Dout]."""
    op = "triton lora_gather"
    check_lora(op, _shrink_kernel, x, a, b, scale)
    check_device(op, _shrink_kernel, x, slots)
    check_dtype(op, "slots", slots, (torch.int32, torch.int64))
    check_shape(op, slots.dim() == 1 and slots.shape[0] == x.shape[0], f"slots must be [T={x.shape[0]}]")
    T, (_, R, Din), Dout = x.shape[0], a.shape, b.shape[1]
    out = torch.zeros(T, Dout, dtype=x.dtype, device=x.device)
    if T == 0:
        return out
    RP = triton.next_power_of_2(R)
    h = torch.empty(T, R, dtype=torch.float32, device=x.device)  # [T, R] scaled shrink per token
    _shrink_kernel[(T,)](x, a, slots, scale, h, Din, R, x.stride(0), a.stride(0), a.stride(1), h.stride(0),
                         RP=RP, BLOCK_K=BLOCK_K)
    _expand_kernel[(T, triton.cdiv(Dout, BLOCK_N))](h, b, slots, out, Dout, R, h.stride(0), b.stride(0),
                                                     b.stride(1), out.stride(0), RP=RP, BLOCK_N=BLOCK_N)
    return out
