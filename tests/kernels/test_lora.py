"""The torch batched-LoRA kernels against a per-token reference."""

import torch

from swarm.kernels.lora import lora_gather, lora_segment


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    T, Din, Dout, S, R = 11, 12, 10, 3, 4
    x = torch.randn(T, Din, generator=g)
    a, b = torch.randn(S, R, Din, generator=g), torch.randn(S, Dout, R, generator=g)
    a[1, 2:] = 0  # slot 1 has rank 2: padded rows are zero
    scale = torch.tensor([0.5, 2.0, 1.0])
    return x, a, b, scale


def _per_token(x, a, b, scale, slot_of):
    out = torch.zeros(x.shape[0], b.shape[1])
    for t, s in enumerate(slot_of):
        if s >= 0:
            out[t] = b[s] @ (a[s] @ x[t]) * scale[s]
    return out


def test_gather_matches_per_token():
    x, a, b, scale = _setup()
    slots = torch.tensor([0, -1, 2, 1, 1, 0, -1, 2, 2, 0, 1])
    ref = _per_token(x, a, b, scale, slots.tolist())
    assert torch.allclose(lora_gather(x, a, b, slots, scale), ref, atol=1e-5)
    assert (lora_gather(x, a, b, slots, scale)[slots == -1] == 0).all()


def test_segment_matches_per_token():
    x, a, b, scale = _setup(1)
    starts, seg_slots = [0, 4, 5, 9, 11], [2, -1, 0, 1]
    slot_of = [s for i, s in enumerate(seg_slots) for _ in range(starts[i], starts[i + 1])]
    ref = _per_token(x, a, b, scale, slot_of)
    assert torch.allclose(lora_segment(x, a, b, starts, seg_slots, scale), ref, atol=1e-5)
