"""Persona-aware prefix cache: a radix tree over KV blocks, keyed by (adapter, token ids).

Each node holds one KV block and the 1..block_size tokens stored in it; a path
from an adapter's root spells a cached prefix. Full blocks can have children;
a partial block (the tail of a finished turn) is always a leaf. Personas on
different adapters live under different roots and never share KV.

A lookup returns shared full blocks plus, where the next block matches only
partly, a block to copy from (copy-on-write: the reader takes a private copy
of the matching tokens and appends after them). Finished requests hand their
blocks to the tree, so an agent's next turn prefills only its new tokens.

Eviction frees nodes nobody is using, the one needed furthest in the future
first: a node's next use is the soonest `hint` of the personas that touched
it; nodes without hints count as never needed again; ties (and the no-hint
case) go least recently used first. Nodes touched by a pinned persona stay.

With a second tier (runtime/kv_tier.py) an evicted node keeps its place in the
tree and its KV moves to the tier ("offloaded"); a lookup that reaches it gets
it back by copy (`acquire`), and `prefetch` brings back what hints say is
needed soon, before it is asked for. Only when the tier is full too is KV
dropped, again the furthest-needed first. Invariant: a node in the pool has its
parent in the pool, so offloaded nodes hang below resident ones.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field

from swarm.runtime.block_pool import BlockAllocator
from swarm.runtime.kv_tier import KVTier


class Node:
    __slots__ = ("tokens", "block", "slot", "parent", "children", "personas", "last_use")

    def __init__(self, tokens: tuple[int, ...], block: int, parent: Node | None):
        self.tokens, self.block, self.parent = tokens, block, parent
        self.slot = -1  # its tier slot while offloaded (then block is -1)
        self.children: dict[tuple[int, ...], Node] = {}
        self.personas: set[Hashable] = set()
        self.last_use = 0

    @property
    def resident(self) -> bool:
        return self.block >= 0


@dataclass
class Match:
    """A cached prefix: `nodes` hold `len(nodes) * block_size` tokens and `blocks` their pool blocks (-1 for one
    in the tier: `PrefixCache.acquire` brings those back); `partial` is (block, tokens) to copy from, of
    `partial_node`."""

    blocks: list[int] = field(default_factory=list)
    partial: tuple[int, int] | None = None
    nodes: list[Node] = field(default_factory=list)
    partial_node: Node | None = None

    def num_tokens(self, block_size: int) -> int:
        return len(self.blocks) * block_size + (self.partial[1] if self.partial else 0)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # stops at the shorter
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    def __init__(self, allocator: BlockAllocator, tier: KVTier | None = None):
        self.alloc, self.bs, self.tier = allocator, allocator.block_size, tier
        self.roots: dict[Hashable, Node] = {}
        self.hints: dict[Hashable, float] = {}
        self.acted: set[Hashable] = set()  # personas that have run since their hint: needed just after it
        self.pinned: set[Hashable] = set()
        self.num_nodes = 0  # every node, in the pool or in the tier
        self.num_offloaded = 0
        self.restored = self.prefetched = self.dropped = 0  # blocks, over the cache's life
        self._busy: set[int] = set()  # ids of nodes an `acquire` is bringing back: not to be evicted meanwhile
        self._clock = itertools.count(1)

    # -- hints ----------------------------------------------------------------------

    def hint(self, persona: Hashable, next_use: float | None = None, pin: bool | None = None) -> None:
        """`next_use`: how soon `persona` acts again (caller's units, smaller is sooner; None clears)."""
        if next_use is None:
            self.hints.pop(persona, None)
        else:
            self.hints[persona] = float(next_use)
        self.acted.discard(persona)
        if pin is not None:
            (self.pinned.add if pin else self.pinned.discard)(persona)

    def used(self, persona: Hashable) -> None:
        """`persona` runs now: the use its hint foretold has come. Until a new hint says when it acts again, it
        counts as needed just after that hint, so personas due at the same time that have not run yet (the rest
        of a tick's agents) keep their KV first; otherwise a pool short of a tick's working set would evict
        each agent's KV just before its turn, as LRU does with a cycle."""
        if persona in self.hints:
            self.acted.add(persona)

    def _next_use(self, node: Node) -> tuple[float, bool]:
        """When `node` is needed next: the soonest hint of its personas, a persona that already ran counting as
        just after its hint (inf: no hint)."""
        return min(((self.hints[p], p in self.acted) for p in node.personas if p in self.hints),
                   default=(math.inf, False))

    # -- lookup and insert -------------------------------------------------------------

    def match(self, adapter: Hashable, tokens: Sequence[int], limit: int | None = None) -> Match:
        """Longest cached prefix of `tokens` (at most `limit` tokens), in the pool or the tier. Takes no
        references."""
        limit = len(tokens) if limit is None else min(limit, len(tokens))
        node, pos, out = self.roots.get(adapter), 0, Match()
        now = next(self._clock)
        while node is not None and pos < limit:
            if pos + self.bs <= limit:
                child = node.children.get(tuple(tokens[pos : pos + self.bs]))
                if child is not None:
                    child.last_use = now
                    out.blocks.append(child.block)
                    out.nodes.append(child)
                    node, pos = child, pos + self.bs
                    continue
            rest = tokens[pos:limit]
            best, best_n = None, 0
            for child in node.children.values():
                n = _common_prefix(child.tokens, rest)
                if n > best_n:
                    best, best_n = child, n
            if best is not None:
                best.last_use = now
                out.partial, out.partial_node = (best.block, best_n), best
            break
        return out

    def acquire(self, match: Match, allocate: Callable[[], int]) -> None:
        """Take a reference to every block of `match` for a reader, first copying back from the tier any that
        were offloaded (`allocate` gives a free pool block, evicting if it must). `match.blocks` and
        `match.partial` then name pool blocks the reader holds."""
        path = match.nodes + ([match.partial_node] if match.partial_node is not None else [])
        away = [n for n in path if not n.resident]
        self._busy, blocks, taken = {id(n) for n in path}, [], []
        try:
            for n in path:  # the resident part first: referenced, nothing evicts it while the rest comes back
                if n.resident:
                    self.alloc.incref(n.block)
                    taken.append(n.block)
            while len(blocks) < len(away):
                blocks.append(allocate())
        except BaseException:
            for b in taken + blocks:
                self.alloc.decref(b)
            raise
        finally:
            self._busy = set()
        if away:  # one copy for the lot
            self._restore(away, blocks)
            self.restored += len(away)
            for b in blocks:
                self.alloc.incref(b)  # the reader's reference, beside the tree's
        taken = [n.block for n in path]
        match.blocks = taken[: len(match.nodes)]
        if match.partial_node is not None:
            match.partial = (taken[-1], match.partial[1])

    def insert(self, adapter: Hashable, tokens: Sequence[int], blocks: Sequence[int], persona: Hashable = None) -> None:
        """Record that `blocks[i]` holds tokens[i*bs:(i+1)*bs] (the last block may be partial).

        The tree takes a reference of its own to every block that becomes a node;
        the caller keeps its references and releases them when it is done. Chunks
        the tree already holds (in another block) are skipped; a chunk it holds in
        the tier takes the caller's block instead (no copy back needed).
        """
        assert len(blocks) == math.ceil(len(tokens) / self.bs), "one block per block_size tokens"
        node = self.roots.get(adapter)
        if node is None:
            node = self.roots[adapter] = Node((), -1, None)
        now = next(self._clock)
        for i, block in enumerate(blocks):
            chunk = tuple(tokens[i * self.bs : (i + 1) * self.bs])
            child = node.children.get(chunk)
            if child is None:
                if len(chunk) < self.bs and self._covered(node, chunk):
                    break  # a tail whose tokens a sibling already holds
                self._drop_partials_covered_by(node, chunk)
                self.alloc.incref(block)
                child = node.children[chunk] = Node(chunk, block, node)
                self.num_nodes += 1
            elif not child.resident:  # the caller computed what the tier holds: keep the caller's copy
                self.alloc.incref(block)
                self.tier.free(child.slot)
                child.block, child.slot = block, -1
                self.num_offloaded -= 1
            child.last_use = now
            if persona is not None:
                child.personas.add(persona)
            node = child

    def _covered(self, node: Node, chunk: tuple[int, ...]) -> bool:
        return any(c.tokens[: len(chunk)] == chunk for c in node.children.values())

    def _drop_partials_covered_by(self, node: Node, chunk: tuple[int, ...]) -> None:
        for key, c in list(node.children.items()):
            if len(c.tokens) < len(chunk) and chunk[: len(c.tokens)] == c.tokens and not c.children:
                del node.children[key]
                self._release(c)

    def _release(self, node: Node) -> None:
        if node.resident:
            self.alloc.decref(node.block)
        else:
            self.tier.free(node.slot)
            self.num_offloaded -= 1
        self.num_nodes -= 1

    def _drop(self, node: Node) -> None:
        """Take `node` and everything under it out of the tree."""
        del node.parent.children[node.tokens]
        stack = [node]
        while stack:
            n = stack.pop()
            stack.extend(n.children.values())
            self._release(n)
            n.parent = None  # marks it gone, for heaps that still hold it
            self.dropped += 1

    # -- moving between the pool and the tier ------------------------------------------

    def _offload(self, nodes: list[Node]) -> None:
        """Copy resident leaves-of-the-pool to tier slots (there must be room) and give their blocks back."""
        slots = self.tier.store([n.block for n in nodes])
        for n, slot in zip(nodes, slots, strict=True):
            self.alloc.decref(n.block)
            n.block, n.slot = -1, slot
        self.num_offloaded += len(nodes)

    def _restore(self, nodes: list[Node], blocks: list[int]) -> None:
        """Copy offloaded nodes back into pool `blocks` (allocated for them: the tree takes those references)."""
        self.tier.load([n.slot for n in nodes], blocks)
        for n, block in zip(nodes, blocks, strict=True):
            self.tier.free(n.slot)
            n.block, n.slot = block, -1
        self.num_offloaded -= len(nodes)

    # -- eviction ------------------------------------------------------------------

    def _evictable(self, node: Node, leaving: set[int] = frozenset()) -> bool:
        """In the pool, used by nobody but the tree, unpinned, and with no child in the pool (but those in
        `leaving`, the ids of nodes on their way out)."""
        return (node.parent is not None and node.resident and self.alloc.refs[node.block] == 1
                and id(node) not in self._busy and not (node.personas & self.pinned)
                and all(not c.resident or id(c) in leaving for c in node.children.values()))

    def _priority(self, node: Node) -> tuple[float, int, int]:
        when, acted = self._next_use(node)
        return (-when, -acted, node.last_use)  # heap pops the furthest next use, then the least recently used

    def _nodes(self, into_tier: bool = False) -> Iterator[Node]:
        """Every node in the pool and the offloaded ones right below them (with `into_tier`, every node): the
        walk leaves out the offloaded subtrees, where all the dead history a large tier keeps piles up."""
        stack = [n for root in self.roots.values() for n in root.children.values()]
        while stack:
            n = stack.pop()
            yield n
            if n.resident or into_tier:
                stack.extend(n.children.values())

    def _walk(self, tier: bool = False) -> tuple[list, list]:
        """(evictable pool nodes, and with `tier` the droppable tier leaves) as heaps by priority."""
        pool, leaves, tie = [], [], itertools.count()
        for n in self._nodes(into_tier=tier):
            if n.resident:
                if self._evictable(n):
                    pool.append((*self._priority(n), next(tie), n))
            elif tier and not n.children and id(n) not in self._busy:
                leaves.append((*self._priority(n), next(tie), n))
        heapq.heapify(pool)
        heapq.heapify(leaves)
        return pool, leaves

    def evict(self, num_blocks: int, offload: bool = True) -> int:
        """Free up to `num_blocks` pool blocks; returns how many were freed. With a tier (and `offload`) their KV
        moves there, making room by dropping tier leaves needed later than what comes in; what finds no room
        is dropped."""
        use_tier = offload and self.tier is not None
        room = self.tier.num_free if use_tier else 0
        heap, tier_heap = self._walk(tier=use_tier and room < num_blocks)  # tier leaves: only if it may fill
        tie = itertools.count(len(heap))
        freed, moving, leaving = 0, [], set()
        while heap and freed < num_blocks:
            prio, node = heap[0][:3], heap[0][-1]
            heapq.heappop(heap)
            while use_tier and not room and tier_heap and tier_heap[0][:3] <= prio:
                leaf = heapq.heappop(tier_heap)[-1]  # needed later than `node` (or as late, and used less lately)
                up = leaf.parent
                if up is not None:  # not dropped with an ancestor meanwhile
                    self._drop(leaf)
                    room += 1
                    if up.parent is not None and not up.resident and not up.children:  # a tier leaf now
                        heapq.heappush(tier_heap, (*self._priority(up), next(tie), up))
            parent = node.parent
            if room:
                moving.append(node)
                leaving.add(id(node))
                room -= 1
            else:  # no room: it goes, with whatever of its subtree was about to move (their slots come free)
                going, stack = set(), list(node.children.values())
                while stack:
                    c = stack.pop()
                    stack.extend(c.children.values())
                    if id(c) in leaving:
                        going.add(id(c))
                moving = [m for m in moving if id(m) not in going]
                leaving -= going
                room += len(going)
                self._drop(node)
            freed += 1
            if self._evictable(parent, leaving):
                heapq.heappush(heap, (*self._priority(parent), next(tie), parent))
        if moving:
            self._offload(moving)
        return freed

    def prefetch(self, max_blocks: int | None = None) -> int:
        """Bring back from the tier, soonest next use first, the offloaded KV of hinted personas: into free pool
        blocks, or in place of pool blocks needed later than it. Returns the blocks brought back."""
        if self.tier is None or not self.num_offloaded:
            return 0
        budget = self.alloc.num_blocks if max_blocks is None else max_blocks
        frontier, tie = [], itertools.count()
        for n in self._nodes():  # the offloaded nodes right below the pool: what can come back first
            if not n.resident and math.isfinite(self._next_use(n)[0]):
                frontier.append((*self._next_use(n), -n.last_use, next(tie), n))
        heapq.heapify(frontier)
        victims = None  # pool nodes by how late they are needed, walked the first time the pool is full
        done = 0
        while frontier and done < budget:
            *soon, _, _, node = heapq.heappop(frontier)
            soon = tuple(soon)
            if node.parent is None or node.resident:  # dropped, or brought back, meanwhile
                continue
            if not self.alloc.num_free:
                victims = self._walk()[0] if victims is None else victims
                if not victims or (-victims[0][0], -victims[0][1]) <= soon:
                    break  # everything in the pool is needed as soon or sooner
                victim = heapq.heappop(victims)[-1]
                parent = victim.parent
                if self.tier.num_free:
                    self._offload([victim])
                else:
                    self._drop(victim)
                if self._evictable(parent):
                    heapq.heappush(victims, (*self._priority(parent), next(tie), parent))
            self._restore([node], [self.alloc.allocate()])
            self.prefetched += 1
            done += 1
            for child in node.children.values():
                if math.isfinite(self._next_use(child)[0]):
                    heapq.heappush(frontier, (*self._next_use(child), -child.last_use, next(tie), child))
        return done

    def drop(self, adapter: Hashable) -> None:
        """Forget everything cached under `adapter` (its weights changed or it is gone); nothing may use it."""
        root = self.roots.pop(adapter, None)
        for child in list(root.children.values()) if root else []:
            self._drop(child)

    def clear(self) -> None:
        """Drop every cached prefix no running request uses, from the pool and the tier."""
        self.evict(self.num_nodes, offload=False)
        for root in self.roots.values():
            for child in list(root.children.values()):
                if not child.resident:
                    self._drop(child)
