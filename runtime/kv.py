"""Attention over the paged KV pool for one engine step.

`PagedBatch` is what the model's attention layers talk to. It is built once
per step from the scheduled requests (their block tables and how many new
tokens each brings), writes every layer's new keys and values into their
slots, and runs attention: decode tokens of all sequences together in one
call, prefill chunks one sequence at a time.

`DenseBatch` has the same `attend` for a forward pass that caches nothing
(`Engine.embed`): each sequence attends causally over its own tokens only,
and the pool is never touched.

Legend: T new tokens in the step, B sequences, H query heads, G key/value
heads, d head dim, bs block size, S key slots, L longest sequence.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from swarm.kernels import attention, registry
from swarm.runtime.block_pool import KVPool


def index_tensor(values: Sequence, device: torch.device) -> torch.Tensor:
    """Python ints (a list, or a list of equal-length lists) as an int64 tensor on `device`. Through numpy:
    several times faster than torch.tensor on a Python list, and a step builds a few of them."""
    t = torch.from_numpy(np.asarray(values, dtype=np.int64))
    return t if device.type == "cpu" else t.to(device)


@functools.lru_cache(maxsize=64)
def key_positions(n: int, device: torch.device) -> torch.Tensor:
    """[1, n]: 0 .. n - 1, the key slots of a decode mask (kept: a step would otherwise build it again)."""
    return torch.arange(n, device=device)[None, :]


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
        self.slots = index_tensor(slots, device)  # [T]
        self.decode = [i for i, q in enumerate(query_lens) if q == 1]
        self.prefill = [i for i, q in enumerate(query_lens) if q > 1]
        self.starts = starts
        # prefill sequences attend one by one through their own block table; decode ones share a padded one
        self.tables = {i: index_tensor(block_tables[i], device) for i in self.prefill}
        if self.prefill:
            self._prefill_attention = registry.get("prefill_attention", device)
        if self.decode:
            nb = max(len(block_tables[i]) for i in self.decode)
            padded = [block_tables[i] + [0] * (nb - len(block_tables[i])) for i in self.decode]
            self.decode_table = index_tensor(padded, device)  # [B, nb]
            if self.prefill:  # a mixed step scatters the decode rows' attention
                self.decode_rows = index_tensor([starts[i] for i in self.decode], device)
            self.key_pos = key_positions(nb * bs, device)  # [1, S]
            self.decode_lens = index_tensor([[context_lens[i]] for i in self.decode], device)  # [B, 1]
            self._masks: dict[int | None, torch.Tensor] = {}
            self._decode_attention = registry.get("decode_attention", device)

    @classmethod
    def decode_only(cls, pool: KVPool, slots: torch.Tensor, table: torch.Tensor, lens: torch.Tensor) -> PagedBatch:
        """A decode step over given tensors (a captured CUDA graph's static buffers): slots [B] where each new
        token's key/value goes, table [B, nb] block tables, lens [B] context lengths with the new token."""
        batch = cls.__new__(cls)
        batch.pool, batch.slots, batch.decode_table = pool, slots, table
        batch.decode, batch.prefill = list(range(slots.shape[0])), []
        batch.key_pos = torch.arange(table.shape[1] * pool.block_size, device=slots.device)[None, :]  # [1, S]
        batch.decode_lens = lens[:, None]  # [B, 1]
        batch._masks = {}
        batch._decode_attention = registry.get("decode_attention", slots.device)
        return batch

    def decode_mask(self, window: int | None) -> torch.Tensor:
        """[B, S] the key slots each decode sequence sees (all of its context, or the last `window`)."""
        mask = self._masks.get(window)
        if mask is None:
            mask = self.key_pos < self.decode_lens  # [B, S]
            if window is not None:
                mask &= self.key_pos >= self.decode_lens - window
            self._masks[window] = mask
        return mask

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               window: int | None, softcap: float | None = None) -> torch.Tensor:
        """q [T, H, d], k/v [T, G, d] of the new tokens -> [T, H, d]; `softcap` soft-caps the scores."""
        pool = self.pool
        pool.write(layer, self.slots, k, v)
        kc, vc = pool.k[layer], pool.v[layer]
        scales = pool.scales(layer)  # int8: [N, bs, G] each
        decode_op, prefill_op = self._ops(softcap)
        if not self.prefill:  # the common decode-only step: no scatter needed
            return decode_op(q, kc, vc, self.decode_table, self.decode_mask(window), scale, *scales)
        out = torch.empty_like(q)
        if self.decode:
            rows = self.decode_rows
            out[rows] = decode_op(q[rows], kc, vc, self.decode_table, self.decode_mask(window), scale, *scales)
        for i in self.prefill:
            s, n, c = self.starts[i], self.query_lens[i], self.context_lens[i]
            out[s : s + n] = prefill_op(q[s : s + n], kc, vc, self.tables[i], c, scale, window, *scales)
        return out

    def _ops(self, softcap: float | None) -> tuple:
        """(decode, prefill) attention ops: the registry's, or for a soft-capped layer torch's reference ones on
        every device, since the native and Triton kernels do not soft-cap. Whether a layer soft-caps is its
        model's config (Gemma 2), fixed at load; the fused CPU decode blocks are never built for such a layer
        (runtime/fused.py)."""
        if softcap is None:
            return getattr(self, "_decode_attention", None), getattr(self, "_prefill_attention", None)
        return (functools.partial(attention.decode_attention, softcap=softcap),
                functools.partial(attention.prefill_attention, softcap=softcap))


class DenseBatch:
    """Whole sequences with no cache: every sequence attends causally over its own tokens, nothing is stored.

    The sequences are padded to the longest one and run as one masked attention call (rather than one call
    per sequence) because embedding batches hold many short texts. Padding keys are masked out, so a
    sequence's output does not depend on its neighbours.
    """

    def __init__(self, query_lens: list[int], device: torch.device):
        if not query_lens or min(query_lens) < 1:
            raise ValueError(f"every sequence needs at least one token, got lengths {query_lens}")
        B, L = len(query_lens), max(query_lens)
        lens = torch.tensor(query_lens, device=device)
        pos = torch.arange(L, device=device)
        valid = pos[None, :] < lens[:, None]  # [B, L]
        self.B, self.L = B, L
        self.rows = valid.flatten().nonzero().squeeze(1)  # [T] each token's row in the padded [B * L]
        self.key_pos, self.query_pos = pos[None, None, :], pos[None, :, None]  # [1, 1, L], [1, L, 1]
        self.key_valid = valid[:, None, :]  # [B, 1, L]
        self._masks: dict[int | None, torch.Tensor] = {}

    def _mask(self, window: int | None) -> torch.Tensor:
        mask = self._masks.get(window)
        if mask is None:
            mask = self.key_valid & (self.key_pos <= self.query_pos)  # [B, L, L]
            if window is not None:
                mask &= self.key_pos > self.query_pos - window
            self._masks[window] = mask
        return mask

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """[T, heads, d] -> [B, heads, L, d], zeros in the padding."""
        out = x.new_zeros(self.B * self.L, *x.shape[1:])
        out[self.rows] = x
        return out.view(self.B, self.L, *x.shape[1:]).transpose(1, 2)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               window: int | None, softcap: float | None = None) -> torch.Tensor:
        """q [T, H, d], k/v [T, G, d] of the sequences' tokens -> [T, H, d]."""
        H, G = q.shape[1], k.shape[1]
        if softcap is not None:
            qp, kp, vp = self._padded(q), self._padded(k), self._padded(v)  # [B, H or G, L, d]
            B, L, d = self.B, self.L, q.shape[2]
            out = attention.softcapped_attention(qp.view(B, G, H // G, L, d), kp[:, :, None], vp[:, :, None],
                                                 self._mask(window)[:, None, None], scale, softcap).view(B, H, L, d)
        else:
            out = F.scaled_dot_product_attention(
                self._padded(q), self._padded(k), self._padded(v), attn_mask=self._mask(window)[:, None],
                scale=scale, enable_gqa=H != G,
            )  # [B, H, L, d]
        return out.transpose(1, 2).reshape(self.B * self.L, H, -1)[self.rows]
