"""Rotary position embedding (torch reference): the angles' cos and sin come from `swarm.runtime.rope`.

Legend: T tokens, H heads, dim the head width.
"""

from __future__ import annotations

import torch


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, dim]; cos, sin [T, dim]. Rotates the two halves of each head (the HF/Llama convention).
    bfloat16 / float16 heads are rotated in float32 and come back in their own dtype (the KV cache and the
    attention kernels take q's dtype); other heads compute in their dtype as it is."""
    if x.dtype in (torch.bfloat16, torch.float16):
        return apply_rotary(x.float(), cos, sin).to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]
