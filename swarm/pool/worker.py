"""A runtime worker: one engine serving the turns a pool's simulations send it over the broker.

    swarm worker --bus mqtt://127.0.0.1:1883 --pool village --model swarm-tiny

The engine runs on a thread of its own (`swarm.serve.worker.EngineWorker`): turns, hints and embedding
requests are all jobs on that thread, so nothing else touches the engine between its steps. Turns that
arrive while it steps join the next step, whoever sent them, so concurrent simulations share batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from swarm.bus import Bus, Message
from swarm.bus.ratelog import RateLimitedLog
from swarm.pool.protocol import (
    ONLINE,
    Embedded,
    EmbedRequest,
    HintBatch,
    TurnBatch,
    TurnDone,
    TurnJob,
    WorkerInfo,
    worker_topic,
)
from swarm.serve.worker import DoneHandle, EngineWorker

if TYPE_CHECKING:
    from swarm.runtime import Engine

log = logging.getLogger("swarm.pool")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Turn:
    """One TurnJob on the engine, in the shape EngineWorker drives: submit, then progress after each step."""

    def __init__(self, job: TurnJob, worker: str, topic: str):
        self.job, self.worker, self.topic = job, worker, topic
        self.id = job.id
        self.handle: Any = None
        self.received = time.perf_counter()

    def submit(self, engine: Engine) -> None:
        from swarm.runtime import JsonSchema, SamplingParams
        from swarm.runtime.chat import fit_prompt

        j = self.job
        params = SamplingParams(max_tokens=j.max_tokens, temperature=j.temperature, top_p=j.top_p, seed=j.seed)
        self.handle = engine.submit(fit_prompt(engine, j.messages, j.max_tokens), params, persona=j.persona,
                                    adapter=j.adapter, schema=JsonSchema(j.schema, keep_order=True))

    def progress(self) -> list[TurnDone]:
        if not self.handle.done:
            return []
        from swarm.model import Answer, answer_of

        out = self.handle.result()
        answer = answer_of(out)
        text, error = (answer.text, None) if isinstance(answer, Answer) else (None, answer.reason)
        return [TurnDone(id=self.id, worker=self.worker, text=text, error=error, finish_reason=out.finish_reason,
                         seconds=time.perf_counter() - self.received, prompt_tokens=len(out.prompt_token_ids),
                         cached_tokens=out.cached_tokens, completion_tokens=len(out.token_ids))]

    def error(self, code: str, message: str) -> TurnDone:
        return TurnDone(id=self.id, worker=self.worker, error=f"{code}: {message}", finish_reason="error")


class _Embed:
    def __init__(self, request: EmbedRequest, worker: str):
        self.request, self.worker, self.topic = request, worker, request.reply_to
        self.id, self.handle, self.reply = request.id, DoneHandle(), None

    def submit(self, engine: Engine) -> None:
        vectors = engine.embed(self.request.texts).numpy().astype("<f4")
        self.reply = Embedded(id=self.id, worker=self.worker, dim=int(vectors.shape[1]), vectors=vectors.tobytes())

    def progress(self) -> list[Embedded]:
        reply, self.reply = self.reply, None
        return [reply] if reply is not None else []

    def error(self, code: str, message: str) -> Embedded:
        return Embedded(id=self.id, worker=self.worker, error=f"{code}: {message}")


class _Hints:
    def __init__(self, batch: HintBatch):
        self.batch, self.id, self.handle, self.topic = batch, "hints", DoneHandle(), None

    def submit(self, engine: Engine) -> None:
        for persona, tick in self.batch.hints:
            engine.hint(persona, next_use=tick)
        if self.batch.prefetch and hasattr(engine, "prefetch"):
            engine.prefetch()

    def progress(self) -> list:
        return []

    def error(self, code: str, message: str) -> _NoReply:
        log.warning("cache hints failed: %s", message)
        return _NoReply()


class _NoReply:
    """What a hint job answers: nothing to publish."""

    done = False


class PoolWorker:
    """Serves `engine` to pool `pool` on `bus` as worker `id`. The bus is the caller's; its presence topic
    should be `worker_topic(pool, id, "status")` (the broker then says `offline` when this process dies)."""

    def __init__(self, engine: Engine, bus: Bus, pool: str, id: str, model: str, capacity: int | None = None):
        self.engine, self.bus, self.pool, self.id, self.model = engine, bus, pool, id, model
        self.capacity = capacity or engine.engine_config.max_seqs
        self.dropped = RateLimitedLog(log, "pool messages dropped")
        self.turns = 0
        self._engine = EngineWorker(engine, self._publish)
        self._tasks: list[asyncio.Task] = []

    def info(self) -> WorkerInfo:
        return WorkerInfo(id=self.id, model=self.model, adapters=sorted(self.engine.adapters()),
                          capacity=self.capacity, embed_dim=self.engine.config.hidden_size)

    async def start(self) -> None:
        self._engine.start()
        for what, type, handle in (("turns", TurnBatch, self._on_turns), ("hints", HintBatch, self._on_hints),
                                   ("embed", EmbedRequest, self._on_embed)):
            sub = await self.bus.subscribe(worker_topic(self.pool, self.id, what), type=type)
            self._tasks.append(asyncio.get_running_loop().create_task(self._serve(sub, handle)))
        await self.bus.publish(worker_topic(self.pool, self.id, "info"), self.info(), retain=True)
        await self.bus.publish(worker_topic(self.pool, self.id, "status"), ONLINE, retain=True)

    async def _serve(self, sub, handle) -> None:
        async for msg in sub:
            try:
                handle(msg)
            except Exception as e:  # a bad message must not stop the worker
                self.dropped.warning("a message on %s could not be served: %r", msg.topic, e)

    def _on_turns(self, msg: Message) -> None:
        batch: TurnBatch = msg.payload
        for job in batch.jobs:
            self._engine.add(_Turn(job, self.id, batch.reply_to))
        self.turns += len(batch.jobs)

    def _on_hints(self, msg: Message) -> None:
        self._engine.add(_Hints(msg.payload))

    def _on_embed(self, msg: Message) -> None:
        self._engine.add(_Embed(msg.payload, self.id))

    async def _publish(self, job, reply) -> None:
        if job.topic is not None and reply is not None:
            await self.bus.publish(job.topic, reply)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._engine.close("the worker is shutting down")

    async def __aenter__(self) -> PoolWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
