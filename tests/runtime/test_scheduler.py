"""The step scheduler at swarm scale: a thousand requests, a small token budget, nobody starved."""

import random

import pytest

from swarm.runtime.block_pool import KVPool
from swarm.runtime.prefix_cache import PrefixCache
from swarm.runtime.request import Request, Status
from swarm.runtime.sampling import SamplingParams
from swarm.runtime.scheduler import Scheduler


def drive(sched: Scheduler, requests: list[Request], max_steps: int = 100_000) -> dict[int, list[int]]:
    """Run steps the way the engine does (compute what is scheduled, sample at the end of a prompt, finish after
    max_tokens) and return, for every request, the steps at which it was served."""
    served: dict[int, list[int]] = {r.id: [] for r in requests}
    for r in requests:
        sched.add(r)
    step = 0
    while sched.has_work:
        assert step < max_steps, "the scheduler stopped making progress"
        batch = sched.schedule()
        assert sum(s.num_tokens for s in batch) <= sched.max_batched_tokens and len(batch) <= sched.max_seqs
        for s in batch:
            req = s.request
            served[req.id].append(step)
            sample = s.samples
            req.num_computed += s.num_tokens
            sched.cache_computed(req)
            if sample:
                req.tokens.append(5)
                req.out.token_ids.append(5)
                if len(req.out.token_ids) >= req.params.max_tokens:
                    req.out.finish_reason = "length"
                    sched.finish(req)
        step += 1
    return served


@pytest.mark.parametrize("kv_tokens", [200_000, 6_000], ids=["roomy", "tight"])
def test_a_thousand_requests_all_finish_and_none_starves(kv_tokens):
    rng = random.Random(0)
    pool = KVPool(kv_tokens // 16, 16, 1, 1, 4)
    sched = Scheduler(pool, PrefixCache(pool), max_batched_tokens=512, max_seqs=256, max_wait_steps=8)
    reqs = [Request([1 + rng.randrange(300) for _ in range(rng.randrange(20, 400))],
                    SamplingParams(max_tokens=rng.randrange(4, 24)), persona=f"a{i}") for i in range(1000)]
    served = drive(sched, reqs)
    assert all(r.status is Status.FINISHED for r in reqs)
    steps = max(s[-1] for s in served.values()) + 1
    total = sum(len(r.tokens) for r in reqs)
    roomy = kv_tokens > 10_000
    # steps stay nearly full of tokens (measured: 1.04x the ideal with room, 1.28x with preemptions)
    assert steps <= (1.1 if roomy else 1.5) * total / 512 + 5
    # once running, a request is served again within a few steps: decode rows are not pushed out by prefill
    gaps = [b - a for s in served.values() for a, b in zip(s, s[1:], strict=False)]
    assert max(gaps) <= (2 if roomy else 8), f"a running request waited {max(gaps)} steps"  # measured 1 and 3
    # nobody waits for its first step much longer than the queue ahead of it takes
    firsts = sorted(s[0] for s in served.values())
    assert firsts[-1] < steps


def test_the_budget_is_kept_and_running_requests_rotate_when_it_is_short():
    pool = KVPool(2000, 16, 1, 1, 4)
    sched = Scheduler(pool, PrefixCache(pool), max_batched_tokens=64, max_seqs=32, max_wait_steps=4)
    reqs = [Request([3] * 10 + [i], SamplingParams(max_tokens=40), persona=i) for i in range(100)]
    served = drive(sched, reqs)
    gaps = [b - a for s in served.values() for a, b in zip(s, s[1:], strict=False)]
    assert max(gaps) <= 8, "with more running requests than the budget, everyone still moves every few steps"
