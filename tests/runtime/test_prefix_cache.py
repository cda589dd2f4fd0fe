"""The prefix cache against a naive reference, on a simulated pool that stores token ids as 'KV'."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.runtime.block_pool import BlockAllocator, OutOfBlocks
from swarm.runtime.prefix_cache import PrefixCache

BS = 4


class FakePool(BlockAllocator):
    """A block's 'KV' is the token ids written into it, so a lookup can be checked slot by slot."""

    def __init__(self, num_blocks: int):
        super().__init__(num_blocks, BS)
        self.slots = [[None] * BS for _ in range(num_blocks)]


def write_request(pool: FakePool, cache: PrefixCache, adapter, tokens, persona=None):
    """Do what the engine does for one finished request: reuse the cached prefix, compute the rest, insert."""
    m = cache.match(adapter, tokens, len(tokens) - 1)
    blocks = list(m.blocks)
    for b in blocks:
        pool.incref(b)
    done = len(blocks) * BS
    if m.partial:
        src, k = m.partial
        new = pool.allocate()
        pool.slots[new][:k] = pool.slots[src][:k]
        blocks.append(new)
        done += k
    # the cached part must hold exactly these tokens
    assert [pool.slots[blocks[p // BS]][p % BS] for p in range(done)] == list(tokens[:done])
    while len(blocks) < math.ceil(len(tokens) / BS):
        blocks.append(pool.allocate())
    for p in range(done, len(tokens)):
        pool.slots[blocks[p // BS]][p % BS] = tokens[p]
    cache.insert(adapter, tokens, blocks, persona)
    for b in blocks:
        pool.decref(b)  # the request is done: only the tree's references remain
    return done


def check_refcounts(pool: FakePool, cache: PrefixCache):
    held = [0] * pool.num_blocks
    stack = list(cache.roots.values())
    nodes = 0
    while stack:
        n = stack.pop()
        stack.extend(n.children.values())
        if n.parent is not None:
            held[n.block] += 1
            nodes += 1
            assert len(n.tokens) == BS or not n.children, "partial blocks are leaves"
    assert held == pool.refs, "every reference is held by exactly one tree node"
    assert nodes == cache.num_nodes == pool.num_used


def common(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


seqs = st.lists(st.integers(0, 3), min_size=1, max_size=14)  # tiny alphabet: lots of shared prefixes
ops = st.lists(st.tuples(st.sampled_from(["base", "lora"]), seqs), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_matches_the_longest_common_prefix_of_anything_inserted(operations):
    pool = FakePool(256)
    cache = PrefixCache(pool)
    inserted = {"base": [], "lora": []}
    for adapter, tokens in operations:
        expected = max((common(tokens, s) for s in inserted[adapter]), default=0)
        expected = min(expected, len(tokens) - 1)
        assert cache.match(adapter, tokens, len(tokens) - 1).num_tokens(BS) == expected
        assert write_request(pool, cache, adapter, tokens) == expected
        inserted[adapter].append(tokens)
        check_refcounts(pool, cache)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(1, 10))
def test_eviction_keeps_the_tree_consistent_and_lookups_correct(operations, every):
    pool = FakePool(24)
    cache = PrefixCache(pool)
    for i, (adapter, tokens) in enumerate(operations):
        if pool.num_free < math.ceil(len(tokens) / BS) + 1:
            cache.evict(math.ceil(len(tokens) / BS) + 1 - pool.num_free)
        if i % every == 0:
            cache.evict(2)
        try:
            write_request(pool, cache, adapter, tokens)  # asserts the cached slots hold the right tokens
        except OutOfBlocks:
            continue
        check_refcounts(pool, cache)
    cache.clear()
    assert pool.num_used == 0 and cache.num_nodes == 0


def test_adapters_never_share_kv():
    pool = FakePool(16)
    cache = PrefixCache(pool)
    write_request(pool, cache, None, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert cache.match(None, [1, 2, 3, 4, 5, 6, 7, 8, 0]).num_tokens(BS) == 8
    assert cache.match("innkeeper", [1, 2, 3, 4, 5, 6, 7, 8, 0]).num_tokens(BS) == 0
    write_request(pool, cache, "innkeeper", [1, 2, 3, 4, 5])
    m_base, m_lora = cache.match(None, [1, 2, 3, 4, 9]), cache.match("innkeeper", [1, 2, 3, 4, 9])
    assert m_base.num_tokens(BS) == m_lora.num_tokens(BS) == 4
    assert set(m_base.blocks).isdisjoint(m_lora.blocks)


def _persona_leaves(pool, cache):
    """Three personas under a shared two-block preamble, one block each."""
    preamble = [9] * 8
    for i, name in enumerate(["ann", "bob", "cid"]):
        write_request(pool, cache, None, preamble + [i] * BS, persona=name)
    return preamble


def _cached(cache, preamble, i):
    return cache.match(None, preamble + [i] * BS + [0]).num_tokens(BS) == 12


def test_eviction_frees_what_is_needed_furthest_in_the_future():
    pool = FakePool(16)
    cache = PrefixCache(pool)
    preamble = _persona_leaves(pool, cache)
    cache.hint("ann", next_use=5)
    cache.hint("bob", next_use=1)
    cache.hint("cid", next_use=3)
    assert cache.evict(1) == 1
    assert not _cached(cache, preamble, 0) and _cached(cache, preamble, 1) and _cached(cache, preamble, 2)
    assert cache.evict(1) == 1
    assert not _cached(cache, preamble, 2) and _cached(cache, preamble, 1)


def test_without_hints_eviction_is_lru_and_pinned_personas_stay():
    pool = FakePool(16)
    cache = PrefixCache(pool)
    preamble = _persona_leaves(pool, cache)
    cache.match(None, preamble + [0] * BS + [0])  # ann used most recently; bob is the LRU leaf
    cache.hint("bob", pin=True)
    assert cache.evict(1) == 1
    assert _cached(cache, preamble, 0) and _cached(cache, preamble, 1) and not _cached(cache, preamble, 2)
    cache.evict(100)  # everything evictable goes: ann's leaf, but not bob's (pinned) nor its ancestors
    assert _cached(cache, preamble, 1) and not _cached(cache, preamble, 0)
    assert cache.num_nodes == 3
    cache.hint("bob", pin=False)
    cache.clear()
    assert cache.num_nodes == 0 and pool.num_used == 0


def test_blocks_in_use_are_never_evicted():
    pool = FakePool(8)
    cache = PrefixCache(pool)
    write_request(pool, cache, None, [1] * 9)
    m = cache.match(None, [1] * 9, 8)
    for b in m.blocks:
        pool.incref(b)  # a running request holds them
    assert cache.evict(10) == 1  # only the partial tail, which the request does not hold
    assert all(pool.refs[b] == 2 for b in m.blocks)
