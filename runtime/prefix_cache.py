"""Persona-aware prefix cache: a radix tree over KV blocks, keyed by (adapter, token ids).

Each node holds one KV block and the 1..block_size tokens stored in it; a path
from an adapter's root spells a cached prefix. Full blocks can have children;
a partial block (the tail of a finished turn) is always a leaf. Personas on
different adapters live under different roots and never share KV.

A lookup returns shared full blocks plus, where the next block matches only
partly, a block to copy from (copy-on-write: the reader takes a private copy
of the matching tokens and appends after them). Finished requests hand their
blocks to the tree, so an agent's next turn prefills only its new tokens.

Eviction frees leaves nobody is using, the one needed furthest in the future
first: a node's next use is the soonest `hint` of the personas that touched
it; nodes without hints count as never needed again; ties (and the no-hint
case) go least recently used first. Nodes touched by a pinned persona stay.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from swarm.runtime.block_pool import BlockAllocator


class Node:
    __slots__ = ("tokens", "block", "parent", "children", "personas", "last_use")

    def __init__(self, tokens: tuple[int, ...], block: int, parent: Node | None):
        self.tokens, self.block, self.parent = tokens, block, parent
        self.children: dict[tuple[int, ...], Node] = {}
        self.personas: set[Hashable] = set()
        self.last_use = 0


@dataclass
class Match:
    """A cached prefix: `blocks` hold `len(blocks) * block_size` tokens; `partial` is (block, tokens) to copy."""

    blocks: list[int] = field(default_factory=list)
    partial: tuple[int, int] | None = None
    nodes: list[Node] = field(default_factory=list)

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
    def __init__(self, allocator: BlockAllocator):
        self.alloc, self.bs = allocator, allocator.block_size
        self.roots: dict[Hashable, Node] = {}
        self.hints: dict[Hashable, float] = {}
        self.pinned: set[Hashable] = set()
        self.num_nodes = 0
        self._clock = itertools.count(1)

    # -- hints ----------------------------------------------------------------------

    def hint(self, persona: Hashable, next_use: float | None = None, pin: bool | None = None) -> None:
        """`next_use`: how soon `persona` acts again (caller's units, smaller is sooner; None clears)."""
        if next_use is None:
            self.hints.pop(persona, None)
        else:
            self.hints[persona] = float(next_use)
        if pin is not None:
            (self.pinned.add if pin else self.pinned.discard)(persona)

    # -- lookup and insert -------------------------------------------------------------

    def match(self, adapter: Hashable, tokens: Sequence[int], limit: int | None = None) -> Match:
        """Longest cached prefix of `tokens` (at most `limit` tokens). Takes no references."""
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
                out.partial = (best.block, best_n)
            break
        return out

    def insert(self, adapter: Hashable, tokens: Sequence[int], blocks: Sequence[int], persona: Hashable = None) -> None:
        """Record that `blocks[i]` holds tokens[i*bs:(i+1)*bs] (the last block may be partial).

        The tree takes a reference of its own to every block that becomes a node;
        the caller keeps its references and releases them when it is done. Chunks
        the tree already holds (in another block) are skipped.
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
        self.alloc.decref(node.block)
        self.num_nodes -= 1

    # -- eviction ------------------------------------------------------------------

    def _evictable(self, node: Node) -> bool:
        return (node.parent is not None and not node.children and self.alloc.refs[node.block] == 1
                and not (node.personas & self.pinned))

    def _priority(self, node: Node) -> tuple[float, int]:
        nxt = min((self.hints[p] for p in node.personas if p in self.hints), default=math.inf)
        return (-nxt, node.last_use)  # heap pops the furthest next use, then the least recently used

    def evict(self, num_blocks: int) -> int:
        """Free up to `num_blocks` blocks; returns how many were freed."""
        heap, tie = [], itertools.count()
        for root in self.roots.values():
            stack = [root]
            while stack:
                n = stack.pop()
                stack.extend(n.children.values())
                if self._evictable(n):
                    heap.append((*self._priority(n), next(tie), n))
        heapq.heapify(heap)
        freed = 0
        while heap and freed < num_blocks:
            *_, node = heapq.heappop(heap)
            parent = node.parent
            del parent.children[node.tokens]
            self._release(node)
            freed += 1
            if self._evictable(parent):
                heapq.heappush(heap, (*self._priority(parent), next(tie), parent))
        return freed

    def drop(self, adapter: Hashable) -> None:
        """Forget everything cached under `adapter` (its weights changed or it is gone); nothing may use it."""
        root = self.roots.pop(adapter, None)
        stack = list(root.children.values()) if root else []
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            self._release(node)

    def clear(self) -> None:
        """Drop every cached prefix no running request uses."""
        self.evict(self.num_nodes)
