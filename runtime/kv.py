"""A simple contiguous KV cache: one growing tensor per sequence and layer.

`KVBatch` is what the model's attention layers talk to: it knows, for one
forward pass over a flat batch of tokens, which tokens belong to which
sequence, stores their keys and values, and runs attention over each
sequence's full history.
"""

from __future__ import annotations

import torch

from swarm.kernels.attention import causal_attention


class SequenceKV:
    """Keys and values of one sequence, per layer: [S, G, d] each."""

    def __init__(self, num_layers: int):
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[0]


class KVBatch:
    """One forward pass: `query_lens[i]` new tokens of `seqs[i]`, laid out one sequence after another."""

    def __init__(self, seqs: list[SequenceKV], query_lens: list[int]):
        self.seqs, self.query_lens = seqs, query_lens

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, window: int | None
    ) -> torch.Tensor:
        """q [T, H, d], k/v [T, G, d] for the new tokens -> [T, H, d]; appends k/v to each sequence."""
        outs = []
        for seq, qs, ks, vs in zip(
            self.seqs, q.split(self.query_lens), k.split(self.query_lens), v.split(self.query_lens), strict=True
        ):
            if seq.k[layer] is not None:
                ks = torch.cat((seq.k[layer], ks))
                vs = torch.cat((seq.v[layer], vs))
            seq.k[layer], seq.v[layer] = ks, vs
            outs.append(causal_attention(qs, ks, vs, scale, window))
        return torch.cat(outs)
