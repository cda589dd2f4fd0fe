"""EngineWorker, the engine thread every front end of `swarm serve` shares: jobs with their own reply sink, a job
cancelled without a reply (its KV freed), and plain calls on the engine thread."""

from __future__ import annotations

import asyncio

import pytest

from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.serve.worker import DoneHandle, EngineWorker


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=512))
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=4096, kv_tier_memory=0))


@pytest.fixture
async def workers(engine):
    """Makes workers on `engine` (`make(publish=None)`) and closes them after the test, whatever happened."""
    made = []

    def make(publish=None) -> EngineWorker:
        made.append(EngineWorker(engine, publish))
        return made[-1]

    yield make
    for worker in made:
        await worker.close("the test is over")


class Count:
    """A job that generates `n` tokens and replies after each step with the tokens so far."""

    def __init__(self, n: int):
        self.n, self.id, self.handle = n, f"count-{n}", None

    def submit(self, engine: Engine) -> None:
        self.handle = engine.submit("The guard", SamplingParams(max_tokens=self.n, temperature=0, ignore_eos=True))

    def progress(self) -> list:
        return [Reply(len(self.handle.token_ids), self.handle.done)]

    def error(self, code: str, message: str):
        return Reply(-1, True)


class Reply:
    def __init__(self, tokens: int, done: bool):
        self.tokens, self.done = tokens, done


async def test_each_job_replies_to_its_own_sink_or_the_workers(workers):
    default, own = [], []

    async def to_default(job, reply):
        default.append((job.id, reply.tokens))

    async def to_own(job, reply):
        own.append((job.id, reply.tokens))

    worker = workers(to_default)
    worker.start()
    worker.add(Count(3))
    worker.add(Count(4), publish=to_own)
    assert await worker.drain(30)
    assert default == [("count-3", 1), ("count-3", 2), ("count-3", 3)]
    assert own == [("count-4", 1), ("count-4", 2), ("count-4", 3), ("count-4", 4)]


async def test_a_cancelled_job_stops_sends_nothing_more_and_frees_its_kv(workers):
    replies = []

    async def publish(job, reply):
        replies.append(reply.tokens)

    worker = workers(publish)
    worker.start()
    job = Count(400)
    worker.add(job)
    while len(replies) < 3:
        await asyncio.sleep(0.01)
    assert await worker.call(lambda e: e.stats()["running"]) == 1
    worker.cancel(job)
    assert await worker.drain(5)  # it would take 400 steps otherwise
    sent = len(replies)
    stats = await worker.call(lambda e: e.stats())
    assert stats["running"] == 0 and job.handle.done and job.handle.result().finish_reason == "cancelled"
    assert stats["kv_blocks_used"] == stats["kv_blocks_cached"]  # what is left is the prefix cache's
    await asyncio.sleep(0.05)
    assert len(replies) == sent and replies[-1] < 400
    worker.cancel(Count(5))  # never added: nothing happens


async def test_a_job_cancelled_before_its_turn_is_never_submitted(workers):
    worker = workers()
    job = Count(5)
    worker.add(job)
    worker.cancel(job)
    worker.start()
    assert await worker.drain(5) and job.handle is None


async def test_call_runs_on_the_engine_thread_and_returns_or_raises(workers):
    import threading

    worker = workers()
    worker.start()
    thread = await worker.call(lambda e: threading.current_thread().name)
    assert thread.startswith("swarm-engine") and thread != threading.current_thread().name
    with pytest.raises(KeyError, match="nope"):
        await worker.call(lambda e: {}["nope"])
    assert await worker.call(lambda e: e.max_context) == 512
    assert DoneHandle().done


class Quiet(Count):
    """A job that replies only when it is done (a whole answer)."""

    def progress(self) -> list:
        return [Reply(len(self.handle.token_ids), True)] if self.handle.done else []


async def test_steps_with_nothing_to_publish_stay_on_the_engine_thread(workers):
    replies, turns = [], []

    async def publish(job, reply):
        replies.append(reply.tokens)

    worker = workers(publish)
    turn = worker._turn
    worker._turn = lambda *args: turns.append(1) or turn(*args)
    worker.start()
    worker.add(Quiet(20))
    assert await worker.drain(30)
    assert replies == [20] and len(turns) == 1  # 20 steps, one trip through the loop
