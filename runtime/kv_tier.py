"""The second KV tier: a larger, slower store for blocks the pool evicts, so cold personas come back by copy
instead of by recompute.

The tier keeps exact copies of whole blocks (every layer's keys and values, and int8 scales), slot by slot, in
host memory: anonymous memory (mapped lazily, so unused slots cost nothing) or a memory-mapped file. Beside a
GPU it is host RAM under device memory; on a CPU it is memory beyond the pool's share, or a file larger than
RAM. Which blocks live here, and which come back when, is the prefix cache's business (runtime/prefix_cache.py);
this class only moves bytes.

Legend: N pool blocks, C tier slots, bs block size.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import torch

from swarm.runtime.block_pool import KVPool, mapped, nbytes, zeros


class KVTier:
    def __init__(self, pool: KVPool, num_slots: int, path: str | Path | None = None):
        if num_slots < 1:
            raise ValueError(f"a KV tier needs at least one slot, got {num_slots}")
        self.pool, self.num_slots, self.path = pool, num_slots, None if path is None else Path(path)
        self._file = None
        shapes = [(num_slots, *t.shape[1:]) for t in pool.tensors()]
        dtypes = [t.dtype for t in pool.tensors()]
        if self.path is None:
            self.tensors = [zeros(s, d, "cpu") for s, d in zip(shapes, dtypes, strict=True)]
        else:
            self.tensors = self._mapped(shapes, dtypes)
        self._free = list(range(num_slots - 1, -1, -1))
        self.stored = self.loaded = 0  # blocks copied in and out, over the tier's life

    def _mapped(self, shapes: list[tuple[int, ...]], dtypes: list[torch.dtype]) -> list[torch.Tensor]:
        """The slots in one file: each tensor a slice of the map (the file is sized once, sparse until written)."""
        sizes = [nbytes(s, d) for s, d in zip(shapes, dtypes, strict=True)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w+b")  # noqa: SIM115 (lives as long as the tier)
        self._file.truncate(sum(sizes))
        buf = mmap.mmap(self._file.fileno(), sum(sizes))
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [mapped(buf, s, d, at) for s, d, at in zip(shapes, dtypes, starts, strict=True)]

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_slots - len(self._free)

    def store(self, blocks: list[int]) -> list[int]:
        """Copy pool `blocks` into free slots (as many as there are); returns the slots, one per block copied."""
        slots = [self._free.pop() for _ in range(min(len(blocks), len(self._free)))]
        if slots:
            src = torch.tensor(blocks[: len(slots)], device=self.pool.k[0].device)
            dst = torch.tensor(slots)
            for tier, pool in zip(self.tensors, self.pool.tensors(), strict=True):
                tier.index_copy_(0, dst, pool.index_select(0, src).cpu())
            self.stored += len(slots)
        return slots

    def load(self, slots: list[int], blocks: list[int]) -> None:
        """Copy `slots` back into pool `blocks` (the slots stay taken: `free` them when done)."""
        if not slots:
            return
        device = self.pool.k[0].device
        src, dst = torch.tensor(slots), torch.tensor(blocks, device=device)
        for tier, pool in zip(self.tensors, self.pool.tensors(), strict=True):
            pool.index_copy_(0, dst, tier.index_select(0, src).to(device))
        self.loaded += len(slots)

    def free(self, slot: int) -> None:
        self._free.append(slot)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
