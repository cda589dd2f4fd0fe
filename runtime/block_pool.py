"""The paged KV pool: fixed-size blocks, preallocated once, reference-counted.

`BlockAllocator` is the bookkeeping (free list and reference counts) and knows
nothing of tensors, so the prefix cache and scheduler can be tested against
it alone. `KVPool` adds the storage: per layer, keys and values of shape
[num_blocks + 1, block_size, G, d]; the last block (`scratch_block`) is never handed out, so padding rows
of a captured decode step (runtime/cuda_graphs.py) have somewhere harmless to write.

Invariant: a block is free exactly when its reference count is 0. Every
holder (a running request's block table, a prefix-cache node) owns one
reference; a block may be written only by a holder that owns its only
reference (copy-on-write otherwise).
"""

from __future__ import annotations

import torch


class OutOfBlocks(Exception):
    """Raised by `allocate` when the pool has no free block; callers evict, queue or preempt."""


class BlockAllocator:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.refs = [0] * num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out low ids first

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise OutOfBlocks
        block = self._free.pop()
        self.refs[block] = 1
        return block

    def incref(self, block: int) -> None:
        assert self.refs[block] > 0, f"incref of free block {block}"
        self.refs[block] += 1

    def decref(self, block: int) -> None:
        assert self.refs[block] > 0, f"decref of free block {block}"
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self._free.append(block)

    def shared(self, block: int) -> bool:
        return self.refs[block] > 1


class KVPool(BlockAllocator):
    """Blocks plus their key/value storage for every layer."""

    def __init__(self, num_blocks: int, block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__(num_blocks, block_size)
        self.scratch_block = num_blocks  # storage only: the allocator never hands it out
        shape = (num_blocks + 1, block_size, num_kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        """Copy the first `num_tokens` slots of `src` into `dst` in every layer (copy-on-write)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[dst, :num_tokens] = k[src, :num_tokens]
            v[dst, :num_tokens] = v[src, :num_tokens]
