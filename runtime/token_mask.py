"""Grammar masks for one step: every constrained request's allowed tokens, applied to its logits row.

llguidance writes one bit per token (32 tokens per int32 word) into one buffer
for all matchers; torch then turns the bits into a 0 / -inf bias and adds it to
the rows in one op (a boolean masked_fill over the same rows is ten times slower
on the CPU). Legend: N constrained rows, W mask words (V / 32 rounded up), V vocab.
"""

from __future__ import annotations

import os
import sys

import llguidance as llg
import torch

__all__ = ["TokenMasker"]


class TokenMasker:
    """Masks logits rows to the tokens their matchers allow; one masker per engine."""

    def __init__(self, vocab_size: int, threads: int | None = None):
        if sys.byteorder != "little":
            raise RuntimeError("grammar masks are read as little-endian bytes; this machine is big-endian")
        self.vocab_size = vocab_size
        self.words = (vocab_size + 31) // 32
        # Mask threads contend with torch's (which spin between ops): with fewer than two cores to
        # spare, the engine's own thread computes the masks, 3-4x faster at batch 32 on 2 cores.
        if threads is None:
            threads = (os.cpu_count() or 1) - torch.get_num_threads()
        self._executor = llg.LLExecutor(threads) if threads >= 2 else None
        self._bits = torch.empty(0, self.words, dtype=torch.int32)  # [N, W], grown on demand, reused
        # row x: the bias of the 8 tokens whose bits form byte value x (0 if allowed, -inf if not)
        allowed = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).bool()  # [256, 8]
        self._bias_table = torch.zeros(256, 8).masked_fill_(~allowed, float("-inf"))

    @torch.inference_mode()  # the logits come from the forward pass as inference tensors
    def apply(self, logits: torch.Tensor, rows: list[int], matchers: list[llg.LLMatcher]) -> list[int]:
        """Set logits[rows[i], t] to -inf for every token t that matchers[i] forbids (in place).

        Returns the indices i whose matcher allows no token at all (a dead end or an error): those
        rows are all -inf and must not be sampled.
        """
        n = len(rows)
        if self._bits.shape[0] < n:
            self._bits = torch.empty(n, self.words, dtype=torch.int32)
        bits = self._bits[:n]  # [N, W]
        # The llguidance.torch helpers do the same, but importing that module compiles with dynamo (seconds).
        row_bytes, ptr = self.words * 4, bits.data_ptr()
        if self._executor is None:
            for i, m in enumerate(matchers):
                m.unsafe_compute_mask_ptr(ptr + i * row_bytes, row_bytes)
        else:
            self._executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], ptr, row_bytes, n)
        mask_bytes = bits.view(torch.uint8).view(-1).long()  # [N * 4W], little-endian: token order
        bias = self._bias_table.index_select(0, mask_bytes).view(n, -1)[:, : self.vocab_size]  # [N, V]
        logits.index_add_(0, torch.tensor(rows), bias)
        empty = (bits == 0).all(1)  # [N]
        return empty.nonzero().flatten().tolist() if empty.any() else []
