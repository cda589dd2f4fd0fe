"""Decode steps replayed as CUDA graphs.

On a GPU a small model's decode step is bound by the host: each layer launches
dozens of small kernels, and a step of a few hundred launches takes
milliseconds while the GPU works for a fraction of one. A decode-only step
(every scheduled request brings one token and samples) has a shape that only
depends on the batch size and the longest block table, so it is captured once
per (batch bucket, block bucket) and replayed: the host copies the step's token
ids, positions, KV slots, block tables and adapter slots into static buffers,
and one replay runs the whole forward pass and the logits.

Batches are padded up to a bucket with rows that write their key/value into a
scratch block of the pool that no request owns and attend to it alone; their
logits are dropped. Prefill steps and steps mixing prefill and decode run eagerly.

What a captured graph relies on, and how it stays true:
- LoRA: inside a graph every wrapped projection applies the gather form for every
  token (slot -1, or an adapter that does not target it, adds exactly zero), so
  adapters loaded into slots after capture are seen. Wrapping a new projection
  changes the module tree, so `DecodeGraphs` drops its graphs when
  `LoRAManager.version` moves.
- Dynamic RoPE needs the longest position on the host: such models run eagerly.
- The Triton kernels: the torch ones (SWARM_KERNELS=torch) read the routing back to the
  host, so an engine on them runs eagerly.
- Nothing in the forward pass reads back from the GPU (the MoE alignment bounds its
  sizes on the host). That holds for an int8 KV pool too: its write quantises with
  torch ops (block_pool.quantize_int8) and the Triton kernels take its scales, so
  it is captured like a float pool (tests/runtime/test_cuda.py, on a GPU).
- Every tensor a graph reads that was made outside its capture (the static inputs,
  the key positions) is held by the graph: freed, its memory would be reused.

Legend: B padded batch, n real requests, nb blocks per table, bs block size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from swarm.kernels import registry
from swarm.runtime.block_pool import KVPool
from swarm.runtime.kv import PagedBatch
from swarm.runtime.scheduler import Scheduled

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
MIN_BLOCKS = 8  # block buckets are powers of two from here up to the longest context


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor  # [B] token ids
    pos: torch.Tensor  # [B] positions
    slots: torch.Tensor  # [B] KV slot each new token is written to
    table: torch.Tensor  # [B, nb] block tables
    lens: torch.Tensor  # [B] context length including the new token
    lora: torch.Tensor  # [B] adapter slot, -1 for the base model
    logits: torch.Tensor  # [B, V] output
    expert_ids: list[torch.Tensor]  # [B, K] routing of each MoE layer, output
    batch: PagedBatch  # held so its tensors made outside the capture (key positions) outlive it


class DecodeGraphs:
    """Captures and replays decode steps for one engine (CUDA only)."""

    def __init__(self, model, pool: KVPool, lora, max_context: int, max_seqs: int, moe_layers: list):
        self.model, self.pool, self.lora = model, pool, lora
        self.device = pool.k[0].device
        bs = pool.block_size
        self.max_blocks = -(-max_context // bs)
        self.batch_buckets = [b for b in BATCH_BUCKETS if b < max_seqs] + [max_seqs]
        self.scratch = pool.scratch_block
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._pool_handle = None  # the memory pool every graph of this engine shares
        self.moe = moe_layers  # their `last_ids` are the graph's outputs after a replay (expert-load stats)
        self.captures = self.replays = 0

    @staticmethod
    def supported(model, device: torch.device) -> bool:
        """Triton kernels only (the torch ones read routing back to the host), and no dynamic RoPE."""
        return registry.backend_for(device) == "triton" and model.rotary.rope.type != "dynamic"

    def _bucket(self, n: int, buckets) -> int | None:
        return next((b for b in buckets if b >= n), None)

    def _block_bucket(self, nb: int) -> int | None:
        b = MIN_BLOCKS
        while b < nb:
            b *= 2
        return min(b, self.max_blocks) if nb <= self.max_blocks else None

    def accepts(self, batch: list[Scheduled]) -> bool:
        return (all(s.num_tokens == 1 and s.samples for s in batch)
                and self._bucket(len(batch), self.batch_buckets) is not None
                and self._block_bucket(max(len(s.request.blocks) for s in batch)) is not None)

    def _capture(self, B: int, nb: int) -> _Graph:
        dev, bs = self.device, self.pool.block_size
        ids = torch.zeros(B, dtype=torch.long, device=dev)
        pos = torch.zeros(B, dtype=torch.long, device=dev)
        slots = torch.full((B,), self.scratch * bs, dtype=torch.long, device=dev)  # warm-ups write the scratch
        table = torch.full((B, nb), self.scratch, dtype=torch.long, device=dev)
        lens = torch.ones(B, dtype=torch.long, device=dev)
        lora = torch.full((B,), -1, dtype=torch.long, device=dev)
        kv = PagedBatch.decode_only(self.pool, slots, table, lens)

        def forward() -> torch.Tensor:
            kv._masks.clear()
            with self.lora.batch.graph_slots(lora):
                hidden = self.model(ids, pos, kv)
            return self.model.compute_logits(hidden)

        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up: Triton compiles and autotunes outside the capture
            for _ in range(2):
                forward()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool_handle):
            logits = forward()
        if self._pool_handle is None:
            self._pool_handle = graph.pool()
        self.captures += 1
        return _Graph(graph, ids, pos, slots, table, lens, lora, logits, [m.last_ids for m in self.moe], kv)

    def clear(self) -> None:
        """Drop the captured graphs (LoRA wrapped a projection: they replay the old modules)."""
        self._graphs.clear()

    def run(self, batch: list[Scheduled]) -> torch.Tensor:
        """Logits [n, V] on the CPU for a decode-only batch (`accepts(batch)` must hold)."""
        n, bs = len(batch), self.pool.block_size
        nb = self._block_bucket(max(len(s.request.blocks) for s in batch))
        B = self._bucket(n, self.batch_buckets)
        g = self._graphs.get((B, nb))
        if g is None:
            g = self._graphs[(B, nb)] = self._capture(B, nb)
        ids, pos, slots, lens, lora, table = [], [], [], [], [], []
        for s in batch:
            r = s.request
            p = r.num_computed  # the new token's position
            ids.append(r.tokens[p])
            pos.append(p)
            slots.append(r.blocks[p // bs] * bs + p % bs)
            lens.append(p + 1)
            lora.append(r.lora_slot)
            table.append(r.blocks + [self.scratch] * (nb - len(r.blocks)))
        pad = B - n
        rows = torch.tensor([ids + [0] * pad, pos + [0] * pad, slots + [self.scratch * bs] * pad,
                             lens + [1] * pad, lora + [-1] * pad], device=self.device)  # [5, B]
        for dst, row in zip((g.ids, g.pos, g.slots, g.lens, g.lora), rows, strict=True):
            dst.copy_(row)
        g.table.copy_(torch.tensor(table + [[self.scratch] * nb] * pad, device=self.device))
        g.graph.replay()
        self.replays += 1
        for m, out in zip(self.moe, g.expert_ids, strict=True):
            m.last_ids = out[:n]
        return g.logits[:n].cpu()
