"""Continuous batching: which requests run in the next step, and how many tokens each.

Each step fills a token budget: running requests first (a decode token each,
or the next chunk of a prompt being prefilled), then waiting requests are
admitted, those with the longest cached prefix first unless someone has
waited `max_wait_steps` (then arrival order). Blocks come from the pool,
evicting cold prefixes when it is empty; when even that is not enough, the
newest running request is preempted (its computed blocks go back to the
prefix cache, its tokens are recomputed later). Nothing crashes and no other
request's blocks are touched.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from swarm.runtime.block_pool import KVPool, OutOfBlocks
from swarm.runtime.prefix_cache import PrefixCache
from swarm.runtime.request import Request, Status


@dataclass
class Scheduled:
    request: Request
    num_tokens: int  # tokens whose KV this step computes

    @property
    def samples(self) -> bool:
        """Whether this step reaches the request's last token, so a new token is sampled."""
        return self.request.num_computed + self.num_tokens == len(self.request.tokens)


class AdapterSlots(Protocol):
    """Per-request resources beyond KV blocks (the LoRA manager's adapter slots): taken at admission, given back
    with the blocks."""

    def hold(self, req: Request) -> bool:
        """Take the request's slot; False when none is free now."""

    def drop(self, req: Request) -> None: ...


class Scheduler:
    def __init__(self, pool: KVPool, cache: PrefixCache, max_batched_tokens: int, max_seqs: int,
                 enable_prefix_cache: bool = True, max_wait_steps: int = 8, adapters: AdapterSlots | None = None):
        self.pool, self.cache, self.bs = pool, cache, pool.block_size
        self.max_batched_tokens, self.max_seqs = max_batched_tokens, max_seqs
        self.enable_prefix_cache, self.max_wait_steps = enable_prefix_cache, max_wait_steps
        self.adapters = adapters
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.prompt_tokens = 0  # tokens admitted for prefill (first admissions)
        self.cached_tokens = 0  # of those, served from the prefix cache
        self.recomputed_tokens = 0  # tokens prefilled again after a preemption
        self._match_len: dict[int, int] = {}  # request id -> cached tokens when it was first considered

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- the step plan ------------------------------------------------------------------

    def schedule(self, max_tokens: int | None = None) -> list[Scheduled]:
        """The next step's requests within `max_tokens` (at most `max_batched_tokens`). When the budget
        cannot serve every running request, those left out go first next step (round robin)."""
        budget = self.max_batched_tokens if max_tokens is None else max(1, min(max_tokens, self.max_batched_tokens))
        batch: list[Scheduled] = []
        left_out: list[Request] = []
        for req in list(self.running):
            if req.status is not Status.RUNNING:
                continue  # preempted below, while making room for an older request
            if budget == 0 or len(batch) >= self.max_seqs:
                left_out.append(req)
                continue
            n = min(req.num_pending, budget)
            while not self._reserve(req, n):
                victim = next(r for r in reversed(self.running) if r.status is Status.RUNNING)
                self._preempt(victim)
                if victim is req:
                    break
            if req.status is Status.RUNNING:
                batch.append(Scheduled(req, n))
                budget -= n
        preempted = any(r.status is Status.WAITING for r in self.running)
        self.running = [r for r in self.running if r.status is Status.RUNNING]
        if left_out:
            served = {id(s.request) for s in batch}
            self.running = ([r for r in self.running if id(r) not in served]
                            + [r for r in self.running if id(r) in served])
        if not preempted:
            for req in self._admission_order():
                if budget == 0 or len(batch) >= self.max_seqs:
                    break
                n = self._admit(req, budget)
                if n < 0:
                    continue  # its adapter cannot be loaded now: others may still fit
                if not n:
                    break  # out of blocks: the rest wait
                self.waiting.remove(req)
                req.status = Status.RUNNING
                self.running.append(req)
                batch.append(Scheduled(req, n))
                budget -= n
        for req in self.waiting:
            req.waited_steps += 1
        return batch

    def _admission_order(self) -> list[Request]:
        starving = [r for r in self.waiting if r.waited_steps >= self.max_wait_steps]
        rest = [r for r in self.waiting if r.waited_steps < self.max_wait_steps]
        if self.enable_prefix_cache:
            rest.sort(key=lambda r: -self._cached_len(r))  # stable: arrival order among equals
        return starving + rest

    def _cached_len(self, req: Request) -> int:
        # Only an ordering heuristic: looked up once per request, so a long queue costs
        # one tree walk per arrival rather than per step.
        n = self._match_len.get(req.id)
        if n is None:
            n = self._match_len[req.id] = self.cache.match(req.adapter, req.tokens, len(req.tokens) - 1).num_tokens(
                self.bs)
        return n

    # -- blocks ----------------------------------------------------------------------

    def allocate(self) -> int:
        """A free block, evicting cold cached prefixes if needed; raises OutOfBlocks when none can be had."""
        try:
            return self.pool.allocate()
        except OutOfBlocks:
            # evict a batch so a full pool does not walk the tree every token; a bigger one with a tier, where
            # evicted KV comes back by copy (1/16 of the pool: village, 120 agents, half its working set: 402 -> 104
            # walks, 5.0 -> 1.2 s of them in 3 ticks)
            batch = self.pool.num_blocks // (16 if self.cache.tier is not None else 64)
            if self.cache.evict(max(1, batch)) == 0:
                raise
            return self.pool.allocate()

    def _reserve(self, req: Request, n: int) -> bool:
        """Make sure slots [num_computed, num_computed + n) are in private blocks."""
        try:
            first = req.num_computed // self.bs
            if first < len(req.blocks) and self.pool.shared(req.blocks[first]):  # copy-on-write
                new = self.allocate()
                self.pool.copy_block(req.blocks[first], new, req.num_computed % self.bs)
                self.pool.decref(req.blocks[first])
                req.blocks[first] = new
            while len(req.blocks) < math.ceil((req.num_computed + n) / self.bs):
                req.blocks.append(self.allocate())
        except OutOfBlocks:
            return False
        return True

    def _admit(self, req: Request, budget: int) -> int:
        """Take cached blocks and reserve the first chunk; returns its size (0: no KV room, -1: no adapter
        slot; nothing is held then)."""
        if self.adapters is not None and not self.adapters.hold(req):
            return -1
        if req.persona is not None:
            self.cache.used(req.persona)
        if self.enable_prefix_cache:
            match = self.cache.match(req.adapter, req.tokens, len(req.tokens) - 1)
            try:
                self.cache.acquire(match, self.allocate)  # references, and copies back what the tier holds
            except OutOfBlocks:
                self._release(req, to_cache=False)
                return 0
            req.blocks, req.num_computed = list(match.blocks), len(match.blocks) * self.bs
            if match.partial:  # share the matching tokens of a partly matching block
                block, k = match.partial
                req.blocks.append(block)
                req.num_computed += k
        n = min(budget, req.num_pending)
        if not self._reserve(req, n):
            self._release(req, to_cache=False)
            return 0
        if req.admitted:
            self.recomputed_tokens += req.num_pending
        else:
            req.admitted = True
            self.prompt_tokens += len(req.tokens)
            self.cached_tokens += req.num_computed
            req.out.cached_tokens = req.num_computed
        self._match_len.pop(req.id, None)
        return n

    def cache_computed(self, req: Request) -> None:
        """Offer a running request's newly completed full blocks to the prefix cache right away,
        so requests admitted while it still runs share them (e.g. a world preamble)."""
        full = req.num_computed // self.bs
        if self.enable_prefix_cache and full > req.num_cached_blocks:
            self.cache.insert(req.adapter, req.tokens[: full * self.bs], req.blocks[:full], req.persona)
            req.num_cached_blocks = full

    def _release(self, req: Request, to_cache: bool) -> None:
        """Give back a request's blocks, first offering the computed ones (partial tail too) to the cache."""
        if to_cache and self.enable_prefix_cache and req.num_computed:
            keep = math.ceil(req.num_computed / self.bs)
            self.cache.insert(req.adapter, req.tokens[: req.num_computed], req.blocks[:keep], req.persona)
        for b in req.blocks:
            self.pool.decref(b)
        req.blocks, req.num_computed, req.num_cached_blocks = [], 0, 0
        if self.adapters is not None:
            self.adapters.drop(req)

    def _preempt(self, req: Request) -> None:
        self._release(req, to_cache=True)
        req.status = Status.WAITING
        req.waited_steps = self.max_wait_steps  # first in line when room comes back
        self.waiting.appendleft(req)
        self.num_preemptions += 1

    # -- after a step ------------------------------------------------------------------

    def postprocess(self, batch: list[Scheduled], outcomes: list[int | str | None],
                    decode: Callable[[list[int]], str]) -> list[Request]:
        """Account for a step: each request's newly computed tokens (full blocks offered to the prefix cache),
        then its outcome (`outcomes`, one per scheduled request: a sampled token, why its grammar cannot go
        on, or None); returns the requests that finished, their blocks given back. `decode` turns token ids
        into text (a request's stop strings and final text)."""
        finished = []
        for s, outcome in zip(batch, outcomes, strict=True):
            req = s.request
            if req.finished:  # cancelled while the pass was in flight: the engine finishes it at the pass's end
                continue
            req.num_computed += s.num_tokens
            self.cache_computed(req)
            if outcome is None:
                continue
            if isinstance(outcome, str):
                req.fail(outcome, decode)
            else:
                req.append(outcome, decode)
            if req.out.finish_reason is not None:
                self.finish(req)
                finished.append(req)
        return finished

    # -- endings ---------------------------------------------------------------------

    def finish(self, req: Request) -> None:
        """A request is done (or cancelled): leave its KV in the prefix cache, free the rest."""
        cancelled = req.out.finish_reason == "cancelled"
        if req.status is Status.RUNNING:
            self.running.remove(req)
            self._release(req, to_cache=not cancelled)
        elif req.status is Status.WAITING:
            self.waiting.remove(req)
        req.status = Status.FINISHED
        self._match_len.pop(req.id, None)
