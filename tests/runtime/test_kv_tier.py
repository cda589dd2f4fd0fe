"""The second KV tier: exact round trips, the cache moving KV between tiers, prefetch by hints."""

import pytest
import torch

from swarm.runtime import Engine, SamplingParams
from swarm.runtime.block_pool import KVPool
from swarm.runtime.engine import EngineConfig
from swarm.runtime.kv_tier import KVTier
from swarm.runtime.prefix_cache import PrefixCache
from swarm.runtime.random_model import tiny_config, write_random_model

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
BS = 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=1024))


def _fill(pool: KVPool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for t in pool.tensors():
        src = torch.randn(t.shape, generator=g) * 50
        t.copy_(src.to(t.dtype) if t.dtype != torch.int8 else src.clamp(-127, 127).to(torch.int8))


@pytest.mark.parametrize("kv_dtype", [None, "int8"])
@pytest.mark.parametrize("on_disk", [False, True])
def test_store_then_load_gives_the_same_bits(kv_dtype, on_disk, tmp_path):
    pool = KVPool(10, BS, 2, 2, 16, kv_dtype=kv_dtype)
    _fill(pool, 1)
    tier = KVTier(pool, 6, tmp_path / "tier.kv" if on_disk else None)
    before = [t[[3, 7, 1]].clone() for t in pool.tensors()]
    slots = tier.store([3, 7, 1])
    assert len(slots) == 3 and tier.num_used == 3
    _fill(pool, 2)  # the pool's blocks are reused for something else
    tier.load(slots, [5, 0, 9])
    after = [t[[5, 0, 9]] for t in pool.tensors()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    tier.close()


def test_a_full_tier_takes_what_it_can():
    pool = KVPool(8, BS, 1, 1, 8)
    tier = KVTier(pool, 2)
    assert len(tier.store([0, 1, 2])) == 2 and tier.num_free == 0
    with pytest.raises(ValueError, match="at least one slot"):
        KVTier(pool, 0)


def _kv_of(engine: Engine, tokens: list[int]) -> list[torch.Tensor]:
    m = engine.cache.match(None, tokens)
    assert all(n.resident for n in m.nodes), "read the KV while it is in the pool"
    return [t[m.blocks].clone() for t in engine.pool.tensors()]


@pytest.mark.parametrize("kv_dtype", [None, "int8"])
def test_evicted_persona_kv_comes_back_bit_identical(folder, kv_dtype):
    engine = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=12 * BS, block_size=BS,
                                                               kv_tier_memory="4MiB", kv_dtype=kv_dtype))
    mira = [7 + i % 50 for i in range(40)]
    first = engine.generate([mira], GREEDY, personas="mira")[0]
    cached = mira + first.token_ids[:-1]
    kv = _kv_of(engine, cached[: len(cached) // BS * BS])
    engine.hint("mira", 100)  # needed late: the others' KV pushes it out first
    for i in range(6):
        engine.hint(f"p{i}", i)
        engine.generate([[200 + i] + [9 + (i * 7 + j) % 90 for j in range(38)]], GREEDY, personas=f"p{i}")
    m = engine.cache.match(None, cached)
    assert m.nodes and not any(n.resident for n in m.nodes), "mira's KV went to the tier"
    assert engine.stats()["kv_tier_blocks_used"] >= len(m.nodes)
    engine.cache.acquire(m, engine.scheduler.allocate)  # what admission does: copy back, take references
    assert all(torch.equal(t[m.blocks], k) for t, k in zip(engine.pool.tensors(), kv, strict=True))
    for b in m.blocks:
        engine.pool.decref(b)
    again = engine.generate([mira], GREEDY, personas="mira")[0]
    assert again.token_ids == first.token_ids and again.cached_tokens > 0
    assert engine.stats()["kv_blocks_restored"] >= len(m.nodes)


def _persona_tokens(i: int) -> list[int]:
    return [i + 1] * BS * 3  # three full blocks of its own


def test_prefetch_brings_back_who_acts_next_by_the_hints():
    """A fake clock: 6 personas, room for 2 in the pool and all in the tier; at each tick the hints say who acts
    next, and prefetch must make exactly those resident before they ask."""
    pool = KVPool(2 * 3, BS, 1, 1, 8)
    tier = KVTier(pool, 6 * 3)
    cache = PrefixCache(pool, tier)

    def allocate():
        if not pool.num_free:
            assert cache.evict(1) == 1
        return pool.allocate()

    for i in range(6):
        blocks = [allocate() for _ in range(3)]
        cache.insert(None, _persona_tokens(i), blocks, persona=i)
        for b in blocks:
            pool.decref(b)
    assert cache.num_offloaded == 4 * 3 and pool.num_free == 0
    for now in range(6):
        soon = [(now + k) % 6 for k in (1, 2)]  # who acts at the next two ticks
        for p in range(6):
            cache.hint(p, next_use=now + 1 + [(now + k) % 6 for k in range(1, 7)].index(p))
        cache.prefetch()
        resident = {p for p in range(6) if all(n.resident for n in cache.match(None, _persona_tokens(p)).nodes)}
        assert resident == set(soon), f"tick {now}: the pool holds {resident}, the next to act are {soon}"
    assert cache.prefetched > 0 and cache.dropped == 0 and cache.num_nodes == 18


def test_a_full_tier_drops_what_is_needed_last():
    pool = KVPool(3, BS, 1, 1, 8)
    cache = PrefixCache(pool, KVTier(pool, 3))
    for i in range(3):
        cache.hint(i, next_use=30 - 10 * i)  # persona 0 is needed last, persona 2 first
    for i in range(3):
        if not pool.num_free:
            cache.evict(3)
        blocks = [pool.allocate() for _ in range(3)]
        cache.insert(None, _persona_tokens(i), blocks, persona=i)
        for b in blocks:
            pool.decref(b)
    # persona 1 went to a full tier holding persona 0, needed later than it: 0 was dropped to make room
    assert cache.dropped == 3 and cache.num_offloaded == 3
    assert not cache.match(None, _persona_tokens(0)).nodes
    assert [n.resident for n in cache.match(None, _persona_tokens(1)).nodes] == [False] * 3
    assert [n.resident for n in cache.match(None, _persona_tokens(2)).nodes] == [True] * 3
    # and one needed after everything in the tier is dropped rather than swapped in
    cache.hint(2, next_use=99)
    assert cache.evict(3) == 3 and cache.dropped == 6 and cache.num_offloaded == 3


def test_engine_prefetch_runs_in_the_background_and_joins_before_a_step(folder):
    engine = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=8 * BS, block_size=BS,
                                                               kv_tier_memory="4MiB"))
    for i in range(4):
        engine.hint(f"p{i}", 10 + i)
        engine.generate([[100 + i] * 30], GREEDY, personas=f"p{i}")
    assert engine.cache.num_offloaded > 0
    engine.hint("p0", 1)  # p0 acts next: its KV should come back
    engine.prefetch()
    engine.step()  # nothing to run, but it must wait for the copy first
    assert engine._prefetching is None
    m = engine.cache.match(None, [100] * 30)
    assert m.nodes and all(n.resident for n in m.nodes)
    assert engine.stats()["kv_blocks_prefetched"] > 0


def test_tier_size_is_stated_and_can_be_turned_off(folder, tmp_path):
    on = Engine.from_pretrained(folder, config=EngineConfig(kv_memory="8MiB", kv_tier_memory="16MiB",
                                                           kv_tier_path=str(tmp_path / "t.kv")))
    assert "a second tier of 16.0 MiB (kv_tier_memory, in" in on.memory_summary()
    off = Engine.from_pretrained(folder, config=EngineConfig(kv_memory="8MiB", kv_tier_memory=0))
    assert off.tier is None and "no second tier" in off.memory_summary()
    with pytest.raises(ValueError, match="kv_tier_memory"):
        EngineConfig(kv_tier_memory="-3GiB")


# -- the cache with a tier against what was written, on random workloads ------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TBS = 4


def _tiered_request(pool: KVPool, cache: PrefixCache, tokens: list[int], persona, evict: int | None = None) -> int:
    """What the engine does for one request, on a pool whose 'KV' is the token ids: reuse the cached prefix
    (copied back from the tier where it was offloaded), write the rest, hand it to the tree."""
    def allocate():
        if not pool.num_free and not cache.evict(evict or pool.num_blocks):  # big batches by default: harder
            raise AssertionError("nothing evictable while no request runs")
        return pool.allocate()

    m = cache.match(None, tokens, len(tokens) - 1)
    cache.acquire(m, allocate)
    blocks, done = list(m.blocks), len(m.blocks) * TBS
    if m.partial:
        src, k = m.partial
        new = allocate()
        pool.k[0][new, :k] = pool.k[0][src, :k]
        pool.decref(src)
        blocks.append(new)
        done += k
    stored = [int(pool.k[0][blocks[p // TBS], p % TBS, 0, 0]) for p in range(done)]
    assert stored == tokens[:done], "the cached prefix (from the pool or the tier) holds exactly these tokens"
    while len(blocks) < -(-len(tokens) // TBS):
        blocks.append(allocate())
    for p in range(done, len(tokens)):
        pool.k[0][blocks[p // TBS], p % TBS, 0, 0] = tokens[p]
    cache.insert(None, tokens, blocks, persona)
    for b in blocks:
        pool.decref(b)
    return done


def _check(pool: KVPool, cache: PrefixCache) -> None:
    resident = offloaded = 0
    stack = [n for r in cache.roots.values() for n in r.children.values()]
    while stack:
        n = stack.pop()
        stack.extend(n.children.values())
        if n.resident:
            resident += 1
            assert n.parent.parent is None or n.parent.resident, "a node in the pool has its parent in the pool"
            assert pool.refs[n.block] == 1
        else:
            offloaded += 1
            assert n.slot >= 0
    assert resident == pool.num_used and offloaded == cache.num_offloaded == cache.tier.num_used
    assert resident + offloaded == cache.num_nodes


workloads = st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(1, 3), min_size=1, max_size=10),
                               st.integers(0, 9)), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(workloads, st.integers(3, 6), st.integers(1, 8))
def test_random_workloads_keep_every_prefix_exact(ops, pool_blocks, tier_slots):
    pool = KVPool(pool_blocks, TBS, 1, 1, 1)
    cache = PrefixCache(pool, KVTier(pool, tier_slots))
    history: dict[int, list[int]] = {}
    for persona, more, hint in ops:
        tokens = (history.get(persona, [persona + 10]) + more)[: (pool_blocks - 1) * TBS - 1]  # room to copy a block
        cache.hint(persona, next_use=hint)
        _tiered_request(pool, cache, tokens, persona)
        history[persona] = tokens
        _check(pool, cache)
        if hint % 3 == 0:
            cache.prefetch()
            _check(pool, cache)


@pytest.mark.parametrize("told", [True, False], ids=["hinted", "lru"])
def test_a_tick_larger_than_the_pool_keeps_half_not_none(told):
    """Every persona acts every tick, in the same order, and the pool holds half of them. LRU evicts each one's
    KV just before its turn (no hits at all); with hints, a persona that already ran this tick counts as
    needed after those still to run, so half of them keep their KV."""
    pool = KVPool(2 * 3 + 1, TBS, 1, 1, 1)
    cache = PrefixCache(pool)
    hits = []
    for tick in range(6):
        if told:
            for p in range(4):
                cache.hint(p, next_use=tick)
        reused = 0
        for p in range(4):
            if told:
                cache.used(p)  # what the scheduler says when it admits the persona's request
            reused += _tiered_request(pool, cache, [p + 10] * 12, p, evict=1) > 0
        hits.append(reused)
    assert hits[2:] == ([2] * 4 if told else [0] * 4)
