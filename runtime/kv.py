"""Attention over the paged KV pool for one engine step.

`PagedBatch` is what the model's attention layers talk to. It is built once
per step from the scheduled requests (their block tables and how many new
tokens each brings), writes every layer's new keys and values into their
slots, and runs attention: decode tokens of all sequences together in one
call, prefill chunks one sequence at a time.

Legend: T new tokens in the step, B sequences, H query heads, G key/value
heads, d head dim, bs block size, S key slots.
"""

from __future__ import annotations

import torch

from swarm.kernels import registry
from swarm.runtime.block_pool import KVPool


class PagedBatch:
    def __init__(self, pool: KVPool, block_tables: list[list[int]], query_lens: list[int],
                 context_lens: list[int], device: torch.device):
        self.pool, self.query_lens, self.context_lens = pool, query_lens, context_lens
        bs = pool.block_size
        slots, starts, t = [], [], 0
        for table, q, c in zip(block_tables, query_lens, context_lens, strict=True):
            slots += [table[p // bs] * bs + p % bs for p in range(c - q, c)]
            starts.append(t)
            t += q
        self.slots = torch.tensor(slots, dtype=torch.long, device=device)  # [T]
        self.decode = [i for i, q in enumerate(query_lens) if q == 1]
        self.prefill = [i for i, q in enumerate(query_lens) if q > 1]
        self.starts = starts
        # prefill sequences attend one by one through their own block table; decode ones share a padded one
        self.tables = {i: torch.tensor(block_tables[i], dtype=torch.long, device=device) for i in self.prefill}
        if self.prefill:
            self._prefill_attention = registry.get("prefill_attention", device)
        if self.decode:
            nb = max(len(block_tables[i]) for i in self.decode)
            padded = [block_tables[i] + [0] * (nb - len(block_tables[i])) for i in self.decode]
            self.decode_table = torch.tensor(padded, dtype=torch.long, device=device)  # [B, nb]
            self.decode_rows = torch.tensor([starts[i] for i in self.decode], dtype=torch.long, device=device)
            lens = torch.tensor([context_lens[i] for i in self.decode], device=device)
            self.key_pos = torch.arange(nb * bs, device=device)[None, :]  # [1, S]
            self.decode_lens = lens[:, None]  # [B, 1]
            self._masks: dict[int | None, torch.Tensor] = {}
            self._decode_attention = registry.get("decode_attention", device)

    def _decode_mask(self, window: int | None) -> torch.Tensor:
        mask = self._masks.get(window)
        if mask is None:
            mask = self.key_pos < self.decode_lens  # [B, S]
            if window is not None:
                mask &= self.key_pos >= self.decode_lens - window
            self._masks[window] = mask
        return mask

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               window: int | None) -> torch.Tensor:
        """q [T, H, d], k/v [T, G, d] of the new tokens -> [T, H, d]."""
        kc, vc = self.pool.k[layer], self.pool.v[layer]
        G, d = kc.shape[2:]
        kc.view(-1, G, d).index_copy_(0, self.slots, k)
        vc.view(-1, G, d).index_copy_(0, self.slots, v)
        if not self.prefill:  # the common decode-only step: no scatter needed
            return self._decode_attention(q, kc, vc, self.decode_table, self._decode_mask(window), scale)
        out = torch.empty_like(q)
        if self.decode:
            rows = self.decode_rows
            out[rows] = self._decode_attention(q[rows], kc, vc, self.decode_table, self._decode_mask(window), scale)
        for i in self.prefill:
            s, n, c = self.starts[i], self.query_lens[i], self.context_lens[i]
            out[s : s + n] = self._prefill_attention(q[s : s + n], kc, vc, self.tables[i], c, scale, window)
        return out
