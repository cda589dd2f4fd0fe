"""The batched engine: batch invariance, cached prefixes, chunked prefill, pressure, cancellation, async."""

import asyncio
import random

import pytest
import torch

from swarm.runtime import Engine, SamplingParams
from swarm.runtime.engine import EngineConfig
from swarm.runtime.random_model import tiny_config, write_random_model

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=4, ignore_eos=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=1024))


def make(folder, **kw) -> Engine:
    return Engine.from_pretrained(folder, config=EngineConfig(**kw))


def prompts(n: int, shared: int = 40, own: int = 20, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    preamble = [rng.randrange(5, 384) for _ in range(shared)]
    return [preamble + [rng.randrange(5, 384) for _ in range(own + i)] for i in range(n)]


def test_batch_invariance_greedy_and_seeded(folder):
    ps = prompts(6)
    for params in (GREEDY, SEEDED):
        alone = [make(folder).generate([p], params)[0].token_ids for p in ps]
        together = [o.token_ids for o in make(folder).generate(ps, params)]
        assert together == alone
        # with cached prefixes: a warm engine that has seen the preamble and the prompts themselves
        warm = make(folder)
        warm.generate(ps[:3], params)
        again = [o.token_ids for o in warm.generate(ps, params)]
        assert again == alone
        assert warm.stats()["cached_tokens"] > 0


def _first_logits(engine, prompt, monkeypatch) -> torch.Tensor:
    seen = []
    real = Engine._postprocess
    monkeypatch.setattr(Engine, "_postprocess", lambda self, batch, logits: (seen.append(logits[0].clone()),
                                                                            real(self, batch, logits))[1])
    engine.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0))
    monkeypatch.setattr(Engine, "_postprocess", real)
    return seen[0]


@pytest.mark.parametrize("cached", [37, 48, 59])  # partial block (copy-on-write), block-aligned, all but one
def test_logits_with_a_cached_prefix_equal_logits_without(folder, monkeypatch, cached):
    p = prompts(1, shared=60, own=0)[0]
    cold = _first_logits(make(folder), p, monkeypatch)
    engine = make(folder)
    engine.generate([p[:cached] + [7, 8]], SamplingParams(max_tokens=1, temperature=0.0))  # caches p[:cached]
    warm = _first_logits(engine, p, monkeypatch)
    assert engine.scheduler.cached_tokens - 0 >= cached  # the second request reused the prefix
    assert (warm - cold).abs().max() <= 1e-4
    assert (engine.logits(p)[-1] - cold).abs().max() <= 1e-4


def test_chunked_prefill_matches_one_shot(folder):
    ps = prompts(3, shared=50, own=30)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    small = make(folder, max_batched_tokens=7)
    assert [o.token_ids for o in small.generate(ps, GREEDY)] == ref
    assert small.stats()["mean_batch_tokens"] <= 7


def test_turns_prefill_only_new_tokens(folder):
    engine = make(folder)
    convo = prompts(1, shared=30, own=10)[0]
    for _ in range(3):
        out = engine.generate([convo], GREEDY)[0]
        convo = convo + out.token_ids + [11, 12, 13]
        before = engine.stats()["tokens_computed"]
        nxt = engine.generate([convo], SamplingParams(max_tokens=1, temperature=0.0))[0]
        # only the reply's last token (never computed) and the 3 new tokens need a forward pass
        assert engine.stats()["tokens_computed"] - before == 4
        assert nxt.cached_tokens == len(convo) - 4


def test_full_pool_queues_and_preempts_without_corruption(folder):
    ps = prompts(8, shared=40, own=30)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    # 160 tokens of KV: about two requests at a time (each needs up to 89 tokens)
    tight = make(folder, kv_cache_tokens=160, block_size=8)
    outs = tight.generate(ps, GREEDY)
    assert [o.token_ids for o in outs] == ref
    s = tight.stats()
    assert s["preemptions"] > 0 and s["mean_batch_seqs"] < 4
    assert tight.pool.num_used == tight.cache.num_nodes - tight.cache.num_offloaded  # only the cache holds blocks


@pytest.mark.parametrize("tier", [None, 0], ids=["tier", "no-tier"])
def test_eviction_under_pressure_keeps_outputs_right(folder, tier):
    ps = prompts(12, shared=24, own=16)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    engine = make(folder, kv_cache_tokens=256, block_size=8, kv_tier_memory=tier)
    for i, p in enumerate(ps):  # one agent after another: the pool fills with their KV
        assert engine.generate([p], GREEDY)[0].token_ids == ref[i]
    assert (engine.cache.num_nodes - engine.cache.num_offloaded) * 8 <= 256
    again = engine.generate(ps, GREEDY)  # some prefixes were evicted (to the tier, or dropped), some still cached
    assert [o.token_ids for o in again] == ref
    s = engine.stats()
    if tier is None:
        assert s["kv_blocks_restored"] > 0 and s["kv_blocks_dropped"] == 0  # the tier held all that was evicted
    else:
        assert "kv_tier_blocks_total" not in s and s["kv_blocks_restored"] == 0 and s["kv_blocks_dropped"] > 0


def test_a_request_larger_than_the_pool_is_refused_up_front(folder):
    engine = make(folder, kv_cache_tokens=32, block_size=8)
    with pytest.raises(ValueError, match="KV pool holds 32 tokens"):
        engine.submit(list(range(5, 35)), SamplingParams(max_tokens=8))


def test_cancel_frees_blocks(folder):
    engine = make(folder, enable_prefix_cache=False)
    handles = [engine.submit(p, SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True))
               for p in prompts(3)]
    for _ in range(3):
        engine.step()
    assert engine.pool.num_used > 0
    handles[1].cancel()
    assert handles[1].done and handles[1].result().finish_reason == "cancelled"
    for h in (handles[0], handles[2]):
        h.cancel()
    assert engine.pool.num_used == 0 and not engine.scheduler.has_work
    handles[0].cancel()  # a second cancel is a no-op


def test_cancel_a_waiting_request(folder):
    engine = make(folder)
    h = engine.submit("The tavern", GREEDY)
    h.cancel()
    assert h.done and engine.step() == [] and engine.pool.num_used == 0


def test_submit_step_pump_and_handles(folder):
    engine = make(folder)
    ps = prompts(4)
    handles = [engine.submit(p, GREEDY, persona=f"agent{i}") for i, p in enumerate(ps)]
    assert not any(h.done for h in handles)
    finished = []
    while engine.scheduler.has_work:
        steps = engine.pump(max_ms=5)
        assert steps >= 1 or engine.mid_step  # a step completed, or one is in flight
        finished += engine.step()  # completes the pass in flight, if any
        assert not engine.mid_step
    assert all(h.done for h in handles)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    assert [h.result().token_ids for h in handles] == ref
    assert engine.pump(max_ms=5) == 0  # nothing to do


def test_a_small_step_budget_takes_turns_and_changes_no_token(folder):
    ps = prompts(6)
    engine = make(folder)
    handles = [engine.submit(p, GREEDY, persona=f"agent{i}") for i, p in enumerate(ps)]
    sizes = []
    while engine.scheduler.has_work:
        engine.step(max_tokens=4)  # fewer tokens than running requests: prefill in chunks, decode in turns
        sizes.append(engine.stats()["last_batch_seqs"])
    assert max(sizes) <= 4
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    assert [h.result().token_ids for h in handles] == ref  # nobody starved, nothing changed


def test_step_cost_is_fitted_on_recent_steps():
    from swarm.runtime.stats import EngineStats

    stats = EngineStats(1, 1)
    assert stats.step_cost() is None  # nothing measured yet
    for n in (1, 8, 64, 256, 1, 64):  # 2 ms per step + 0.1 ms per token
        stats.record_step([type("S", (), {"num_tokens": n})()], 1, 0.002 + 0.0001 * n)
    fixed, per_token = stats.step_cost()
    assert fixed == pytest.approx(0.002) and per_token == pytest.approx(0.0001)


def test_pump_keeps_to_its_budget_by_sizing_steps(folder):
    engine = make(folder)
    long = prompts(1, shared=300, own=200)[0]
    engine.generate([long[:64]], GREEDY)  # a few steps to fit the step cost on
    h = engine.submit(long, GREEDY)
    # less than any step takes: one slice (a layer's attention or MLP) per call for progress, the step a small one
    assert engine.pump(max_ms=0.5) == 0 and engine.mid_step
    while engine.pump(max_ms=0.5) == 0:  # the pass goes on where it stopped
        pass
    # not the 500-token prompt in one step (the engine's default step takes 512 tokens)
    assert 0 < h._request.num_computed < len(long)
    while not h.done:
        engine.pump(max_ms=2)
    assert h.result().token_ids == make(folder).generate([long], GREEDY)[0].token_ids


def test_a_pass_spread_over_pump_calls_survives_cancel_and_logits(folder):
    ps = prompts(3)
    engine = make(folder)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    handles = [engine.submit(p, GREEDY, persona=f"agent{i}") for i, p in enumerate(ps)]
    engine.step()
    engine.pump(max_ms=0.0)  # one slice, no more: the pass stays in flight
    assert engine.mid_step
    used = engine.pool.num_used
    handles[1].cancel()  # done at once; its blocks go when the pass in flight has written its KV
    assert handles[1].done and handles[1].result().finish_reason == "cancelled"
    assert engine.mid_step and engine.pool.num_used == used
    handles[1].cancel()  # a second cancel is a no-op
    engine.pump(max_ms=0.0)
    alone = make(folder).logits(ps[0])
    assert torch.allclose(engine.logits(ps[0]), alone, atol=1e-5)  # it completes the pass first
    assert not engine.mid_step
    while engine.scheduler.has_work:
        engine.pump(max_ms=0.5)
    assert [handles[0].result().token_ids, handles[2].result().token_ids] == [ref[0], ref[2]]
    for h in handles:
        h.cancel()
    assert engine.pool.num_used == engine.cache.num_nodes  # only the cache holds blocks now
    # cancelling everyone in the pass in flight drops the pass and frees their blocks at once
    engine = make(folder, enable_prefix_cache=False)
    h = engine.submit(ps[0], GREEDY)
    engine.pump(max_ms=0.0)
    assert engine.mid_step and engine.pool.num_used > 0
    h.cancel()
    assert not engine.mid_step and engine.pool.num_used == 0 and not engine.scheduler.has_work


def test_result_drives_the_engine(folder):
    engine = make(folder)
    h = engine.submit("The mill", GREEDY)
    assert len(h.result().token_ids) == 12


async def test_agenerate_concurrent_callers_share_steps(folder):
    engine = make(folder)
    ps = prompts(4)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    outs = await asyncio.gather(*(engine.agenerate([p], GREEDY) for p in ps))
    assert [o[0].token_ids for o in outs] == ref
    assert engine.stats()["mean_batch_seqs"] > 1.5  # they really ran together


async def test_stream_pieces_add_up_to_the_text(folder):
    engine = make(folder)
    full = engine.generate("Once upon a time", GREEDY)[0].text
    pieces = [p async for p in engine.stream("Once upon a time", GREEDY)]
    assert "".join(pieces) == full and len(pieces) > 1


async def test_stream_stops_before_a_stop_string(folder):
    engine = make(folder)
    free = engine.generate("Once", GREEDY)[0].text
    stop = free[4:7]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop=[stop])
    text = "".join([p async for p in engine.stream("Once", params)])
    assert text == free[: free.find(stop)]


def test_partial_text_only_grows_into_the_final_text_and_new_text_hands_it_out_in_pieces(folder):
    engine = make(folder)
    free = engine.generate("Once", GREEDY)[0].text
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop=[free[5:9]])
    handles = [engine.submit("Once", params), engine.submit("Once", GREEDY)]
    seen, pieces = [[], []], [[], []]
    while not all(h.done for h in handles):
        engine.step()
        for h, texts, new in zip(handles, seen, pieces, strict=True):
            texts.append(h.partial_text())
            new.append(h.new_text())
    for h, texts, new in zip(handles, seen, pieces, strict=True):
        final = h.result().text
        assert texts[-1] == final and all(final.startswith(t) for t in texts)
        assert "".join(new) == final and h.new_text() == ""  # the pieces join into it, each handed out once
    assert seen[0][-1] == free[: free.find(free[5:9])] and seen[1][-1] == free


def test_stats(folder):
    engine = make(folder)
    p = prompts(1, shared=64, own=0)[0]
    engine.generate([p], GREEDY)
    engine.generate([p[:48] + [5] * 16], GREEDY)
    s = engine.stats()
    assert s["prompt_tokens"] == 128 and s["cached_tokens"] == 48
    assert s["prefix_cache_hit_rate"] == pytest.approx(48 / 128)
    assert s["tokens_generated"] == 24 and s["tokens_per_s"] > 0
    assert 0 < s["kv_pool_use"] <= 1 and s["preemptions"] == 0
    load = torch.tensor(s["expert_load"])
    assert load.shape == (engine.config.num_layers, engine.config.num_experts)
    # every computed token picks top_k experts in every MoE layer
    assert (load.sum(1) == s["tokens_computed"] * engine.config.top_k).all()


def test_longer_cached_prefixes_go_first_without_starving_others(folder):
    engine = make(folder, max_seqs=1, max_wait_steps=4)
    cached = prompts(1, shared=48, own=0)[0]
    engine.generate([cached], SamplingParams(max_tokens=1, temperature=0.0))
    short = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    cold = engine.submit([7] * 30, short)
    warm = engine.submit(cached + [9], short)
    engine.step()
    assert warm._request in engine.scheduler.running and cold._request in engine.scheduler.waiting
    # a stream of cache-friendly arrivals cannot keep the cold request waiting forever
    admitted_at = None
    for step in range(40):
        engine.submit(cached + [10 + step], short)
        engine.step()
        if cold._request not in engine.scheduler.waiting and admitted_at is None:
            admitted_at = step
    assert admitted_at is not None and admitted_at <= 4 + 2
    assert cold.result().finish_reason == "length"



def test_requests_in_flight_share_a_preamble_as_soon_as_it_is_computed(folder):
    ps = prompts(3, shared=48, own=22)
    ref = [o.token_ids for o in make(folder).generate(ps, GREEDY)]
    engine = make(folder, max_batched_tokens=32)  # the first prompt alone fills the first steps
    outs = engine.generate(ps, GREEDY)  # submitted together, nothing cached beforehand
    assert [o.token_ids for o in outs] == ref
    assert outs[0].cached_tokens == 0
    assert all(o.cached_tokens >= 48 for o in outs[1:])  # the preamble's blocks, computed once


def test_a_decode_only_batch_over_given_tensors_matches_the_built_one():
    """`PagedBatch.decode_only` (what a captured CUDA graph runs over) writes and attends like a batch built from
    block tables, with padded tables and a sliding window."""
    from swarm.runtime.block_pool import KVPool
    from swarm.runtime.kv import PagedBatch

    tables, lens = [[3, 1], [0, 4, 2]], [20, 40]
    results = []
    for make_batch in ("built", "given"):
        pool = KVPool(6, 16, 1, 2, 8)
        pool.k[0].copy_(torch.randn(pool.k[0].shape, generator=torch.Generator().manual_seed(1)))
        pool.v[0].copy_(torch.randn(pool.v[0].shape, generator=torch.Generator().manual_seed(2)))
        if make_batch == "built":
            kv = PagedBatch(pool, tables, [1, 1], lens, torch.device("cpu"))
        else:
            slots = torch.tensor([t[(n - 1) // 16] * 16 + (n - 1) % 16 for t, n in zip(tables, lens, strict=True)])
            padded = torch.tensor([t + [pool.scratch_block] * (4 - len(t)) for t in tables])  # one more bucket
            kv = PagedBatch.decode_only(pool, slots, padded, torch.tensor(lens))
        q, k, v = (torch.randn(2, heads, 8, generator=torch.Generator().manual_seed(s))
                   for s, heads in ((3, 4), (4, 2), (5, 2)))
        results.append([kv.attend(0, q, k, v, 0.3, w) for w in (None, 10)] + [pool.k[0].clone(), pool.v[0].clone()])
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
