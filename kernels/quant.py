"""Weights in blocks of 32 sharing one scale, llama.cpp's Q8_0 and Q4_0, and the formats that ride the same
kernels (bf16 / f16 halves, int8 with a scale per row): packing, unpacking and the torch reference ops (the
native kernels in kernels/native compute the same thing without unpacking to memory).

A weight [..., N, K] is cut along K into blocks of 32; each block keeps one float32 scale s
(scales [..., N, K / 32]) and 32 small integers q:

  q8_0  int8 values [..., N, K], w = q * s, s = max |w| / 127 over the block
  q4_0  4-bit values two a byte, uint8 [..., N, K / 2], w = (q - 8) * s with q in 0..15; s = m / -8 where m
        is the block's weight of largest magnitude (so m itself is exact, at q = 0). Byte j of a block holds
        weight j in its low nibble and weight j + 16 in its high one, the order of llama.cpp's block_q4_0.

llama.cpp keeps the scale as float16; here it is float32 (a float16 scale from a GGUF file converts exactly,
and four bytes per 32 weights cost little next to the values).

A product with Q8_0 or Q4_0 weights rounds its activations to Q8_0 blocks first, as llama.cpp does (and for the
same reason: the native kernels then multiply integers and apply one scale per block, about twice as fast as
unpacking every weight to a float): per 32 values of a row d = max |x| / 127, q = x (1 / d) rounded to nearest
even. `round_activations` is that rounding; `linear` and `expert_ffn` here apply it, so they compute what the
native kernels do up to the order of the float32 sums.

The half formats, bf16 and f16, are the weight itself rounded to bfloat16 or float16 ([..., N, K], half the
bytes of float32) with no scales (an empty tensor stands in for them); the native kernels read them as blocks
of 32 with no scale. Any K fits them (kernels/native widens other widths than multiples of 32 per call).

int8 is the weight rounded to int8 with one float32 scale per row (values [..., N, K] int8, scales [..., N]):
s = max |w| / 127 over the row, w = q s. Like the halves its products keep float activations: the native
kernels widen q to float32 in registers, sum x q in float32 and multiply the row's sum by s once (a quarter of
float32's bytes, any K as for the halves).

Legend: N out features, K in features, T tokens, D hidden, E experts, I expert width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from swarm.kernels import moe

BLOCK = 32
FORMATS = ("q8_0", "q4_0", "bf16", "f16", "int8")
HALF = {"bf16": torch.bfloat16, "f16": torch.float16}  # formats that are the weight in a 16-bit float dtype
ROUNDED = ("q8_0", "q4_0")  # formats whose products take activations rounded to Q8_0 blocks
WIDENED = ("bf16", "f16", "int8")  # formats widened to float32 for float activations: any K, one value a weight


class Blocks(NamedTuple):
    """A weight in blocks: `values` (int8 for q8_0, uint8 pairs for q4_0) and float32 `scales` [..., N, K / 32];
    for bf16 / f16 the 16-bit weight [..., N, K] and an empty `scales`; for int8 values [..., N, K] and float32
    `scales` [..., N]."""

    values: torch.Tensor
    scales: torch.Tensor
    fmt: str

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical shape of the weight, [..., N, K]."""
        if self.fmt in WIDENED:
            return tuple(self.values.shape)
        return (*self.scales.shape[:-1], self.scales.shape[-1] * BLOCK)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown block format {fmt!r}; supported: {', '.join(FORMATS)}")


def quantize(w: torch.Tensor, fmt: str) -> Blocks:
    """w [..., N, K] float (K a multiple of 32 for q8_0 / q4_0) -> its blocks, rounded to nearest."""
    check_format(fmt)
    if fmt in HALF:
        return Blocks(w.detach().to(HALF[fmt]).contiguous(), torch.empty(0), fmt)
    if fmt == "int8":
        rows = w.detach().float()
        scale = rows.abs().amax(-1) / 127
        q = torch.round(rows / torch.where(scale > 0, scale, 1)[..., None]).clamp_(-127, 127)
        return Blocks(q.to(torch.int8).contiguous(), scale.contiguous(), fmt)
    K = w.shape[-1]
    if K % BLOCK:
        raise ValueError(f"{fmt}: rows of {K} weights do not split into blocks of {BLOCK}")
    blocks = w.detach().float().reshape(*w.shape[:-1], K // BLOCK, BLOCK)
    if fmt == "q8_0":
        scale = blocks.abs().amax(-1) / 127
        q = torch.round(blocks / torch.where(scale > 0, scale, 1)[..., None]).clamp_(-127, 127)
        return Blocks(q.to(torch.int8).reshape(w.shape).contiguous(), scale.contiguous(), fmt)
    at = blocks.abs().argmax(-1, keepdim=True)
    scale = blocks.gather(-1, at).squeeze(-1) / -8
    q = (torch.round(blocks / torch.where(scale != 0, scale, 1)[..., None]) + 8).clamp_(0, 15).to(torch.uint8)
    packed = q[..., : BLOCK // 2] | (q[..., BLOCK // 2 :] << 4)  # [..., K / 32, 16]
    return Blocks(packed.reshape(*w.shape[:-1], K // 2).contiguous(), scale.contiguous(), fmt)


def dequantize(values: torch.Tensor, scales: torch.Tensor, fmt: str) -> torch.Tensor:
    """The float32 weight [..., N, K] the blocks stand for: each element one rounding of q * s."""
    check_format(fmt)
    if fmt in HALF:
        return values.float()  # exact: every half is a float32
    if fmt == "int8":
        return values.float() * scales.float()[..., None]
    lead, nb = scales.shape[:-1], scales.shape[-1]
    if fmt == "q8_0":
        q = values.reshape(*lead, nb, BLOCK).float()
    else:
        packed = values.reshape(*lead, nb, BLOCK // 2)
        q = torch.cat(((packed & 0x0F), (packed >> 4)), dim=-1).float() - 8
    return (q * scales.float()[..., None]).reshape(*lead, nb * BLOCK)


def round_activations(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] (K a multiple of 32) as its Q8_0 blocks stand for it: per 32 values d = max |x| / 127 and
    q = round(x (1 / d)), returned as q d (the same dtype as x)."""
    K = x.shape[-1]
    if K % BLOCK:
        raise ValueError(f"rows of {K} activations do not split into blocks of {BLOCK}")
    blocks = x.float().reshape(*x.shape[:-1], K // BLOCK, BLOCK)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    q = torch.round(blocks * torch.where(d != 0, 1 / d, 0))
    return (q * d).reshape(x.shape).to(x.dtype)


def activations(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """What a product with weights in `fmt` multiplies: x rounded to Q8_0 blocks for Q8_0 / Q4_0, else x."""
    return round_activations(x) if fmt in ROUNDED else x


def linear(x: torch.Tensor, values: torch.Tensor, scales: torch.Tensor, fmt: str,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ W^T (+ bias) with W the dequantised blocks [N, K] (x rounded as `activations` says)."""
    return F.linear(activations(x, fmt), dequantize(values, scales, fmt).to(x.dtype), bias)


def expert_ffn(x: torch.Tensor, gate_up: Blocks, down: Blocks, weights: torch.Tensor,
               ids: torch.Tensor) -> torch.Tensor:
    """`swarm.kernels.moe.expert_ffn` on the dequantised experts: gate_up [E, 2I, D], down [E, D, I] in blocks
    (one format); the inputs of both projections rounded as `activations` says."""
    return moe.expert_ffn(activations(x, gate_up.fmt), dequantize(*gate_up).to(x.dtype),
                          dequantize(*down).to(x.dtype), weights, ids,
                          down_input=(lambda h: activations(h, down.fmt)) if down.fmt in ROUNDED else None)
