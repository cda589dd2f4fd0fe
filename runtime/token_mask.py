"""Grammar masks for one step: every constrained request's allowed tokens, applied to its logits row.

llguidance writes one bit per token (32 tokens per int32 word) for all matchers
in one call, off the GIL; torch then expands the bits and masks the rows
together. Legend: N constrained rows, W mask words (V / 32 rounded up), V vocab.
"""

from __future__ import annotations

import sys

import llguidance as llg
import torch

__all__ = ["TokenMasker"]


class TokenMasker:
    """Masks logits rows to the tokens their matchers allow; one masker per engine."""

    def __init__(self, vocab_size: int):
        if sys.byteorder != "little":
            raise RuntimeError("grammar masks are read as little-endian bytes; this machine is big-endian")
        self.vocab_size = vocab_size
        self.words = (vocab_size + 31) // 32
        self._executor = llg.LLExecutor()
        self._bits = torch.empty(0, self.words, dtype=torch.int32)  # [N, W], grown on demand, reused
        # bit b of byte value x, for x in 0..255: bytes expand to tokens without a shift per bit
        self._bit_table = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).bool()  # [256, 8]

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
        self._executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], bits.data_ptr(),
                                               self.words * 4, n)
        allowed = self._bit_table[bits.view(torch.uint8).long()].view(n, -1)[:, : self.vocab_size]  # [N, V]
        index = torch.tensor(rows)
        logits[index] = logits[index].masked_fill_(~allowed, float("-inf"))
        return (~allowed.any(1)).nonzero().flatten().tolist()
