"""The paged KV pool: fixed-size blocks, preallocated once, reference-counted.

`BlockAllocator` is the bookkeeping (free list and reference counts) and knows
nothing of tensors, so the prefix cache and scheduler can be tested against
it alone. `KVPool` adds the storage: per layer, keys and values of shape
[num_blocks + 1, block_size, G, d]; the last block (`scratch_block`) is never handed out, so padding rows
of a captured decode step (runtime/cuda_graphs.py) have somewhere harmless to write.

With `kv_dtype="int8"` keys and values are stored as int8 with one float32 scale per token and head
(`k_scale`/`v_scale`, [num_blocks + 1, block_size, G]): value = int8 * scale, scale = max |x| / 127 over the
head's d values. The attention kernels read that layout directly.

Invariant: a block is free exactly when its reference count is 0. Every
holder (a running request's block table, a prefix-cache node) owns one
reference; a block may be written only by a holder that owns its only
reference (copy-on-write otherwise).
"""

from __future__ import annotations

import mmap

import torch

from swarm.kernels import registry
from swarm.kernels.native import ops as native

KV_DTYPES = ("float32", "float16", "bfloat16", "int8")
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}
LAZY_BYTES = 64 * 2**20  # CPU storage at least this large is mapped, not zero-filled: pages cost only once touched


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


def kv_torch_dtype(kv_dtype: str) -> torch.dtype:
    if kv_dtype not in _TORCH_DTYPES:
        raise ValueError(f"unknown kv_dtype {kv_dtype!r}; supported: {', '.join(KV_DTYPES)}")
    return _TORCH_DTYPES[kv_dtype]


def nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


def mapped(buf: mmap.mmap, shape: tuple[int, ...], dtype: torch.dtype, offset: int = 0) -> torch.Tensor:
    """A tensor over `buf` from byte `offset`; the map lives as long as the tensor that views it."""
    t = torch.frombuffer(buf, dtype=dtype, count=torch.Size(shape).numel(), offset=offset).view(shape)
    t._swarm_buffer = buf
    return t


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A zero tensor. Large CPU ones live in an anonymous memory map: the kernel hands out zero pages as they
    are first written, so a pool sized to the machine costs memory only for the blocks ever used."""
    device = torch.device(device)
    size = nbytes(shape, dtype)
    if device.type != "cpu" or size < LAZY_BYTES:
        return torch.zeros(shape, dtype=dtype, device=device)
    return mapped(mmap.mmap(-1, size), shape, dtype)


class KVPool(BlockAllocator):
    """Blocks plus their key/value storage (and int8 scales) for every layer."""

    def __init__(self, num_blocks: int, block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", kv_dtype: str | None = None):
        super().__init__(num_blocks, block_size)
        self.scratch_block = num_blocks  # storage only: the allocator never hands it out
        self.kv_dtype = kv_dtype or str(dtype).removeprefix("torch.")
        self.quantized = self.kv_dtype == "int8"
        store = kv_torch_dtype(self.kv_dtype)
        shape = (num_blocks + 1, block_size, num_kv_heads, head_dim)
        self.k = [zeros(shape, store, device) for _ in range(num_layers)]
        self.v = [zeros(shape, store, device) for _ in range(num_layers)]
        self.k_scale: list[torch.Tensor] | None = None
        self.v_scale: list[torch.Tensor] | None = None
        if self.quantized:
            self.k_scale = [zeros(shape[:3], torch.float32, device) for _ in range(num_layers)]
            self.v_scale = [zeros(shape[:3], torch.float32, device) for _ in range(num_layers)]
        # int8 writes quantise in one native call where the CPU runs the native kernels (the torch ops are ten
        # small calls per tensor and layer); the same arithmetic, so the same bits either way
        self._native_store = self.quantized and torch.device(device).type == "cpu" \
            and registry.backend_for(device) == "native"

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype | str) -> int:
        """Storage per cached token: keys and values of every layer (int8: plus a float32 scale per head)."""
        if isinstance(dtype, str):
            if dtype == "int8":
                return 2 * num_layers * num_kv_heads * (head_dim + 4)
            dtype = kv_torch_dtype(dtype)
        return 2 * num_layers * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def scales(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(k_scale, v_scale) [N + 1, bs, G] of `layer` for an int8 pool, (None, None) for a float one."""
        return (self.k_scale[layer], self.v_scale[layer]) if self.quantized else (None, None)

    def tensors(self) -> list[torch.Tensor]:
        """Every per-layer storage tensor, each indexed by block first: what one block's contents are."""
        out = self.k + self.v
        if self.quantized:
            out += self.k_scale + self.v_scale
        return out

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the new tokens' keys and values k/v [T, G, d] of `layer` in their slots [T] (int8: quantised
        per token and head)."""
        kc, vc = self.k[layer], self.v[layer]
        G, d = kc.shape[2:]
        if not self.quantized:  # (rounded to the cache's dtype first: float16 on a float32 model's CPU)
            kc.view(-1, G, d).index_copy_(0, slots, k.to(kc.dtype))
            vc.view(-1, G, d).index_copy_(0, slots, v.to(vc.dtype))
            return
        for x, cache, scales in ((k, kc, self.k_scale[layer]), (v, vc, self.v_scale[layer])):
            if self._native_store and native.store_int8(x, slots, cache, scales):
                continue
            values, scale = quantize_int8(x)
            cache.view(-1, G, d).index_copy_(0, slots, values)
            scales.view(-1, G).index_copy_(0, slots, scale)

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        """Copy the first `num_tokens` slots of `src` into `dst` in every layer (copy-on-write)."""
        for t in self.tensors():
            t[dst, :num_tokens] = t[src, :num_tokens]


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., d] -> (int8 values [..., d], float32 scales [...]) with x ~= values * scales: one scale per
    row, max |x| / 127 (0 for an all-zero row), values rounded to nearest."""
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.round(x / safe[..., None]).clamp_(-127, 127).to(torch.int8)
    return values, scale


def dequantize_int8(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The inverse of `quantize_int8`: values [..., d] int8, scales [...] -> float32 [..., d]."""
    return values.float() * scale[..., None]
