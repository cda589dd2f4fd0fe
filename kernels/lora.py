"""Batched LoRA: many adapters in one batch (torch reference and CPU path).

Adapters live in S slots, stacked and zero-padded to the largest rank R:
a [S, R, Din] (lora_A), b [S, Dout, R] (lora_B), scale [S] (alpha / r, or
alpha / sqrt(r) for rsLoRA). Zero padding leaves every product exact.

Two forms, as in multi-LoRA serving kernels:
- gather: one slot per token (decode batches mix adapters token by token);
- segment: one slot per run of consecutive tokens (a prefill chunk is one run).
Slot -1 means "no adapter" (the base model) and adds nothing.

Legend: T tokens, Din/Dout feature sizes, S slots, R padded rank.
"""

from __future__ import annotations

import torch


def lora_gather(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, slots: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """x [T, Din], slots [T] (int64, -1 for none) -> delta [T, Dout]."""
    out = x.new_zeros(x.shape[0], b.shape[1])
    for s in torch.unique(slots).tolist():
        if s < 0:
            continue
        rows = (slots == s).nonzero().squeeze(1)
        out[rows] = (x[rows] @ a[s].T) @ b[s].T * scale[s]  # [n, R] -> [n, Dout]
    return out


def lora_segment(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, starts: list[int], seg_slots: list[int],
                 scale: torch.Tensor) -> torch.Tensor:
    """x [T, Din]; segment i is rows starts[i]:starts[i+1] on slot seg_slots[i] -> delta [T, Dout].

    Segments on the same slot go through one pair of matmuls: a step of a thousand agents holds a few dozen
    prefill chunks on a handful of adapters, and small matmuls per chunk cost more in calls than in FLOPs."""
    out = x.new_zeros(x.shape[0], b.shape[1])
    by_slot: dict[int, list[int]] = {}
    for i, s in enumerate(seg_slots):
        if s >= 0:
            by_slot.setdefault(s, []).append(i)
    for s, segs in by_slot.items():
        if len(segs) == 1:
            lo, hi = starts[segs[0]], starts[segs[0] + 1]
            out[lo:hi] = (x[lo:hi] @ a[s].T) @ b[s].T * scale[s]
            continue
        rows = torch.cat([torch.arange(starts[i], starts[i + 1], device=x.device) for i in segs])  # [n]
        out.index_copy_(0, rows, (x.index_select(0, rows) @ a[s].T) @ b[s].T * scale[s])  # [n, R] -> [n, Dout]
    return out
