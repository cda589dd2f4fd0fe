"""The model runner: a scheduled step's forward pass, from its batch to the logits of the rows that sample.

The runner builds a step's inputs once (`StepInputs`: token ids, positions, the paged KV view, the LoRA rows)
and hands the step to the first of its decode strategies that takes it, all behind one interface
(`Strategy`: `accepts`, then `run`):

- `GraphReplay` (CUDA): a decode step that samples every row, replayed as a captured graph (the forward pass
  and the logits in one replay; it fills the graph's own padded buffers, so it needs no `StepInputs`);
- `WholeDecode` (CPU): a decode-only step in one native call, from its tokens to their logits, unless the step is
  sliced for `pump` (it reads the requests itself, so it needs no `StepInputs` either);
- `Slices` (anywhere): the model a block at a time (each layer's attention, then its MLP), with the fused CPU
  blocks standing in for the layers they cover on a decode-only step.

`run` is a generator: it yields None after each slice but the last and returns the logits [R, V] on the CPU
(the caller takes them with `yield from`), so `Engine.pump` can stop between two slices and go on in the next
frame. Whether a step is decode-only is decided once (`StepInputs.decode_only`, or by `WholeDecode` from the
batch itself: every request one new token), and a LoRA change (`LoRAManager.version` moves when a projection is
wrapped) rebuilds what depends on the projections in one place (`ModelRunner._follow_lora`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from swarm.kernels.native import ops as native
from swarm.runtime.block_pool import KVPool
from swarm.runtime.cuda_graphs import DecodeGraphs
from swarm.runtime.fused import FusedDecode
from swarm.runtime.kv import PagedBatch, index_tensor
from swarm.runtime.lora import LoRAManager
from swarm.runtime.model import Model
from swarm.runtime.scheduler import Scheduled

Pass = Generator[None, None, torch.Tensor]  # yields None between slices, returns the logits [R, V] on the CPU


@dataclass
class StepInputs:
    """What the model reads in one step, built once per step by `ModelRunner.inputs`."""

    ids: torch.Tensor  # [T] the tokens whose KV the step computes, request after request
    positions: torch.Tensor  # [T]
    kv: PagedBatch

    @property
    def decode_only(self) -> bool:
        """One new token per sequence: the shape the fused blocks take."""
        return not self.kv.prefill and bool(self.kv.decode)


class Strategy(Protocol):
    """One way to run a step's forward pass."""

    needs_inputs: bool  # whether `run` reads the step's `StepInputs` (built for the first strategy that does)

    def accepts(self, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> bool:
        """Whether it runs this step (`step` is None when no strategy before it needed the inputs built)."""

    def run(self, runner: ModelRunner, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> Pass:
        """The step's pass (see the module's docstring)."""


class GraphReplay:
    """A decode step replayed as a captured CUDA graph: forward pass and logits in one replay."""

    needs_inputs = False

    def __init__(self, graphs: DecodeGraphs):
        self.graphs = graphs

    def accepts(self, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> bool:
        return self.graphs.accepts(batch)

    def run(self, runner: ModelRunner, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> Pass:
        logits = self.graphs.run(batch)
        yield None
        return logits


class WholeDecode:
    """A decode-only step in one native call on the CPU, from its tokens to their logits (`FusedDecode.run`),
    unless sliced for `pump`. It reads the requests' tokens, positions and block tables itself: no `StepInputs`."""

    needs_inputs = False

    def __init__(self, fused: FusedDecode):
        self.fused = fused

    def accepts(self, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> bool:
        return (not sliced and self.fused.whole is not None and all(s.num_tokens == 1 for s in batch)
                and self.fused.rotary.table(max(s.request.num_computed for s in batch) + 1) is not None)

    def run(self, runner: ModelRunner, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> Pass:
        requests = [s.request for s in batch]
        positions = [r.num_computed for r in requests]
        ids = [r.tokens[p] for r, p in zip(requests, positions, strict=True)]
        # the head in the same call where its product is the C code's (more rows take torch's, as prefill does)
        logits = self.fused.whole.N > 0 and len(batch) <= native.LINEAR_MAX_ROWS
        out = self.fused.run(ids, positions, [r.blocks for r in requests],
                             self.fused.rotary.table(max(positions) + 1), logits)
        yield None
        if not logits:  # the normed hidden states
            return runner.logits(batch, out)
        return out if all(s.samples for s in batch) else out[[i for i, s in enumerate(batch) if s.samples]]


class Slices:
    """The model a block at a time; a decode-only step's fusable blocks run fused (`fused` given)."""

    needs_inputs = True

    def __init__(self, fused: FusedDecode | None):
        self.fused = fused

    def accepts(self, batch: list[Scheduled], step: StepInputs | None, sliced: bool) -> bool:
        return True

    def run(self, runner: ModelRunner, batch: list[Scheduled], step: StepInputs, sliced: bool) -> Pass:
        model = runner.model
        layers = self.fused.layers if self.fused is not None and step.decode_only else model.layers
        x, tables = model.inputs(step.ids, step.positions)
        for layer, table in zip(layers, model.layer_tables, strict=True):
            x = layer.attend(x, *tables[table], step.kv)
            yield None
            x = layer.feed_forward(x)
            yield None
        return runner.logits(batch, model.norm(x))


class ModelRunner:
    """Runs a model's steps on `device`: builds each step's inputs and picks its strategy (module docstring).
    `graphs`: captured decode graphs (CUDA); `fused`: the CPU's fused decode blocks."""

    def __init__(self, model: Model, pool: KVPool, lora: LoRAManager, device: torch.device,
                 graphs: DecodeGraphs | None = None, fused: bool = False):
        self.model, self.pool, self.lora, self.device = model, pool, lora, device
        self.graphs, self._fuse = graphs, fused
        self._lora_version = lora.version
        self.strategies: Sequence[Strategy] = self._strategies()

    def _strategies(self) -> list[Strategy]:
        """Tried in order; the last takes any step."""
        fused = FusedDecode(self.model, self.pool) if self._fuse else None
        out: list[Strategy] = [GraphReplay(self.graphs)] if self.graphs is not None else []
        if fused is not None:
            out.append(WholeDecode(fused))
        return [*out, Slices(fused)]

    @property
    def num_slices(self) -> int:
        """The slices a sliced pass takes: each layer's attention and its MLP, then the logits."""
        return 2 * len(self.model.layers) + 1

    @property
    def fused(self) -> FusedDecode | None:
        """The fused CPU decode blocks in use (None: none)."""
        return self.strategies[-1].fused

    def _follow_lora(self) -> None:
        """LoRA wrapped a projection since the last step: the fused blocks point at the old modules and the
        captured graphs replay them, so both go."""
        if self.lora.version == self._lora_version:
            return
        self._lora_version = self.lora.version
        if self.graphs is not None:
            self.graphs.clear()
        self.strategies = self._strategies()

    def run(self, batch: list[Scheduled], sliced: bool) -> Pass:
        """The step's pass: yields None after each slice but the last, returns the logits of the rows that
        sample [R, V] on the CPU. `sliced`: each block a slice (pump); else a decode step may run its layers
        in one."""
        self._follow_lora()
        step = None
        for strategy in self.strategies:
            if strategy.needs_inputs and step is None:
                step = self.inputs(batch)
            if strategy.accepts(batch, step, sliced):
                return strategy.run(self, batch, step, sliced)
        raise AssertionError("the last strategy takes any step")

    def forward(self, batch: list[Scheduled]) -> torch.Tensor:
        """The step's pass run to its end, unsliced: the logits of the rows that sample [R, V] on the CPU."""
        p = self.run(batch, sliced=False)
        while True:
            try:
                next(p)
            except StopIteration as done:
                return done.value

    def inputs(self, batch: list[Scheduled]) -> StepInputs:
        """The step's inputs, with the LoRA rows set for its tokens."""
        ids, pos = [], []
        for s in batch:
            r, start = s.request, s.request.num_computed
            ids += r.tokens[start : start + s.num_tokens]
            pos += range(start, start + s.num_tokens)
        kv = PagedBatch(self.pool, [s.request.blocks for s in batch], [s.num_tokens for s in batch],
                        [s.request.num_computed + s.num_tokens for s in batch], self.device)
        self.lora.batch.set([s.request.lora_slot for s in batch], [s.num_tokens for s in batch], self.device)
        return StepInputs(index_tensor(ids, self.device), index_tensor(pos, self.device), kv)

    def logits(self, batch: list[Scheduled], hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states [T, D] -> logits [R, V] on the CPU for the R requests that sample this step."""
        if len(hidden) != len(batch) or not all(s.samples for s in batch):  # not one sampled token per request
            last = index_tensor([s.num_tokens for s in batch], self.device).cumsum(0) - 1
            hidden = hidden[last[[i for i, s in enumerate(batch) if s.samples]]]
        return self.model.compute_logits(hidden).cpu()
