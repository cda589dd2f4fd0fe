"""PoolModel: a simulation's turns decided by the live workers of a pool on the broker.

    sim = Simulation.from_scenario("village", model="mqtt://127.0.0.1:1883/village")   # swarm worker --pool village

Each persona's turns go to the worker rendezvous hashing picks among the live ones (its KV stays warm
there; so do its cache hints). Every turn of a tick is in flight at once, up to each worker's capacity;
the rest wait for answers. A worker that goes offline (its last will, when it dies) hands its outstanding
turns to the others, and so does one that holds turns without answering for `stall_timeout` seconds.
The turns carry their seeds, and the engine's kernels do not depend on the batch, so a run's events are
the same on any number of workers as in process.

The model keeps its own bus connection and event loop on a thread of its own: `decide` is called from the
simulation's executor thread and waits there.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from swarm.bus import open_bus, topics
from swarm.bus.url import redact, strip_password
from swarm.model import Answer, NoAction, Turn, TurnModel, check_sampling, wire_schemas
from swarm.pool.protocol import (
    OFFLINE,
    ONLINE,
    Embedded,
    EmbedRequest,
    HintBatch,
    Reply,
    TurnBatch,
    TurnDone,
    TurnJob,
    WorkerInfo,
    client_topic,
    owner,
    split_pool_url,
    worker_topic,
)

log = logging.getLogger("swarm.pool")

WAIT_NOTICE_S = 5.0  # how often a run with no live worker says it is waiting


class PoolModel(TurnModel):
    """Turns decided by pool `POOL`'s workers on the broker of `url` (`mqtt[s]://[user@]host:port/POOL`)."""

    def __init__(self, url: str, *, temperature: float = 0.7, top_p: float = 0.95, client: str | None = None,
                 connect_timeout: float = 10.0, affinity: bool = True, stall_timeout: float = 120.0):
        """`stall_timeout`: a worker that holds turns and has answered none of them for this many seconds is
        passed over (its turns go to the others) until it answers again: a machine that hangs without
        disconnecting. `affinity=False` sends each turn to a live worker drawn by its seed instead of its
        persona's owner: the baseline persona affinity is measured against (benchmarks/pool.py)."""
        if stall_timeout <= 0:
            raise ValueError(f"stall_timeout is seconds > 0, got {stall_timeout}")
        check_sampling(temperature, top_p)
        bus_url, self.pool = split_pool_url(url)
        self.affinity, self.stall_timeout = affinity, stall_timeout
        self._heard: dict[str, float] = {}  # worker -> when it last answered, or was given turns while idle
        self._silent: set[str] = set()  # workers passed over for holding turns without answering
        self.ref, self.shown = strip_password(url), redact(url)
        self.temperature, self.top_p = temperature, top_p
        self.client = client or uuid.uuid4().hex[:12]
        self.reply_topic = client_topic(self.pool, self.client)
        self.workers: dict[str, WorkerInfo] = {}  # live workers by id
        self.failovers: list[dict] = []  # per worker lost: when it was noticed (time.monotonic), turns resent
        self.counters = {"turns": 0, "turns_resent": 0, "workers_lost": 0, "workers_stalled": 0, "prompt_tokens": 0,
                         "cached_tokens": 0, "tokens_generated": 0}
        self._status: dict[str, str] = {}
        self._infos: dict[str, WorkerInfo] = {}
        self._changed: asyncio.Event | None = None
        self._results: dict[int, Reply] = {}
        self._expected: set[int] = set()  # ids of the turns and embeddings being waited for
        self._resent: set[int] = set()  # turns re-sent after their worker was lost, not answered yet
        self._ids = itertools.count()
        self._hints: dict[str, float] = {}
        self._hints_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="swarm-pool", daemon=True)
        self._thread.start()
        self.bus = open_bus(bus_url, client_id=f"swarm-pool-{self.client}")
        self._call(self._start(), timeout=connect_timeout + 5)
        atexit.register(self.close)

    # -- the loop thread ---------------------------------------------------------------------

    def _call(self, coro, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._changed = asyncio.Event()
        await self.bus.connect()
        watch = await self.bus.subscribe(worker_topic(self.pool, topics.ANY, topics.ANY))
        replies = await self.bus.subscribe(self.reply_topic, type=Reply)
        self._tasks = [self._loop.create_task(self._watch(watch)), self._loop.create_task(self._collect(replies))]

    async def _watch(self, sub) -> None:
        """Track each worker's status and info (retained); who is live changes what `_dispatch` may use."""
        async for msg in sub:
            *_, worker, what = msg.topic.split("/")
            worker = topics.unescape(worker)
            if what == "status":  # the bus's presence ({"client", "status"}) or a plain string
                payload = msg.payload
                self._status[worker] = str(payload.get("status") if isinstance(payload, dict) else payload)
            elif what == "info":
                try:
                    self._infos[worker] = msgspec.convert(msg.payload, WorkerInfo)
                except msgspec.ValidationError as e:
                    log.warning("worker %s of pool %s sent info that does not read: %s", worker, self.pool, e)
                    continue
            else:
                continue
            live = {w: i for w, i in self._infos.items() if self._status.get(w) == ONLINE}
            for gone in set(self.workers) - set(live):
                self.counters["workers_lost"] += 1
                self.failovers.append({"worker": gone, "noticed": time.monotonic(), "resent": 0})
                log.warning("worker %s of pool %s is %s; its turns go to the others", gone, self.pool,
                            self._status.get(gone, OFFLINE))
            for new in set(live) - set(self.workers):
                log.info("worker %s of pool %s is online (%s)", new, self.pool, live[new].model)
            self.workers = live
            self._changed.set()

    async def _collect(self, sub) -> None:
        async for msg in sub:
            worker = msg.payload.worker
            self._heard[worker] = time.monotonic()
            if worker in self._silent:
                self._silent.discard(worker)
                log.warning("worker %s of pool %s answers again", worker, self.pool)
                self._changed.set()
            if msg.payload.id in self._expected:  # a late second answer to a resent turn is dropped
                self._results[msg.payload.id] = msg.payload
                self._changed.set()

    async def _wait_for_workers(self, what: str) -> list[str]:
        noticed = 0.0
        while not self._usable():
            now = time.monotonic()
            if now - noticed >= WAIT_NOTICE_S:
                log.warning("no live worker in pool %r on %s: %s waits (start one: swarm worker --bus URL --pool %s)",
                            self.pool, self.shown, what, self.pool)
                noticed = now
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), WAIT_NOTICE_S)
            except asyncio.TimeoutError:
                pass
        return self._usable()

    def _usable(self) -> list[str]:
        return sorted(w for w in self.workers if w not in self._silent)

    def _pass_over_the_silent(self, at: dict[int, str]) -> None:
        now = time.monotonic()
        for w in set(at.values()) - self._silent:
            if w in self.workers and now - self._heard.get(w, now) > self.stall_timeout:
                self._silent.add(w)
                self.counters["workers_stalled"] += 1
                self.failovers.append({"worker": w, "noticed": now, "resent": 0})
                log.warning("worker %s of pool %s holds turns and has answered none for %.0f s; they go to the "
                            "others", w, self.pool, now - self._heard[w])
    # -- turns -------------------------------------------------------------------------------

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        jobs = []
        for t, schema in zip(turns, wire_schemas(turns), strict=True):
            r = t.request
            jobs.append(TurnJob(id=next(self._ids), messages=r.messages, schema=schema, max_tokens=r.max_tokens,
                                seed=t.seed, persona=r.persona, adapter=r.adapter, temperature=self.temperature,
                                top_p=self.top_p))
        done = self._call(self._decide(jobs))
        self.counters["turns"] += len(jobs)
        return [_value(done[j.id], t.request.schema) for j, t in zip(jobs, turns, strict=True)]

    async def _decide(self, jobs: list[TurnJob]) -> dict[int, TurnDone]:
        waiting = {j.id: j for j in jobs}
        self._expected |= set(waiting)
        at: dict[int, str] = {}  # job -> the worker it was last sent to
        out: dict[int, TurnDone] = {}
        while waiting:
            live = await self._wait_for_workers(f"{len(waiting)} turns")
            self._changed.clear()
            for i in [i for i in self._results if i in waiting]:  # the answers that came in
                reply = self._results.pop(i)
                if isinstance(reply, TurnDone):
                    out[i] = reply
                    if i in self._resent and self.failovers:  # the last of a lost worker's turns answered
                        self._resent.discard(i)
                        self.failovers[-1]["answered_at"] = time.monotonic()
                    self.counters["prompt_tokens"] += reply.prompt_tokens
                    self.counters["cached_tokens"] += reply.cached_tokens
                    self.counters["tokens_generated"] += reply.completion_tokens
                    del waiting[i]
                    at.pop(i, None)
                    self._expected.discard(i)
            self._pass_over_the_silent(at)
            self._dispatch(waiting, at, self._usable() or live)
            if waiting:
                try:
                    await asyncio.wait_for(self._changed.wait(), self.stall_timeout / 4)
                except asyncio.TimeoutError:
                    pass  # time to look for silent workers again
        return out

    def _dispatch(self, waiting: dict[int, TurnJob], at: dict[int, str], live: list[str]) -> None:
        """Send every waiting turn that is not in flight on a live worker to its owner, within capacity."""
        load: dict[str, int] = {w: 0 for w in live}
        for w in at.values():
            if w in load:
                load[w] += 1
        idle = {w for w, n in load.items() if n == 0}
        batches: dict[str, list[TurnJob]] = {}
        for i, job in waiting.items():
            if at.get(i) in load:
                continue  # in flight on a live worker
            w = owner(job.persona, live) if self.affinity else random.Random(job.seed).choice(live)
            if load[w] >= self.workers[w].capacity:
                continue  # back-pressure: it goes when an answer frees a place
            if i in at:
                self.counters["turns_resent"] += 1
                if self.failovers:
                    self.failovers[-1]["resent"] += 1
                    self.failovers[-1].setdefault("resent_at", time.monotonic())
                self._resent.add(i)
            at[i] = w
            load[w] += 1
            batches.setdefault(w, []).append(job)
        now = time.monotonic()
        for w, batch in batches.items():
            if w in idle:  # its silence counts from now
                self._heard[w] = now
            self.bus.publish_nowait(worker_topic(self.pool, w, "turns"), TurnBatch(reply_to=self.reply_topic,
                                                                                   jobs=batch))

    # -- embeddings, hints -------------------------------------------------------------------

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        reply = self._call(self._embed(list(texts)))
        if reply.error:
            raise RuntimeError(f"worker {reply.worker} of pool {self.pool} could not embed: {reply.error}")
        return np.frombuffer(reply.vectors, "<f4").reshape(len(texts), reply.dim).copy()

    async def _embed(self, texts: list[str]) -> Embedded:
        rid, sent_to = next(self._ids), None
        self._expected.add(rid)
        while True:
            live = await self._wait_for_workers("an embedding")
            self._changed.clear()
            reply = self._results.pop(rid, None)
            if isinstance(reply, Embedded):
                self._expected.discard(rid)
                return reply
            if sent_to not in live:  # not sent yet, or its worker went away
                sent_to = live[0]  # every worker embeds alike: the same texts in one call give the same rows
                self.bus.publish_nowait(worker_topic(self.pool, sent_to, "embed"),
                                        EmbedRequest(id=rid, reply_to=self.reply_topic, texts=texts))
            await self._changed.wait()

    def hint(self, persona: str, next_use: float) -> None:
        with self._hints_lock:
            self._hints[persona] = next_use

    def prefetch(self) -> None:
        """Send the tick's hints, each to the worker that owns its persona."""
        with self._hints_lock:
            hints, self._hints = self._hints, {}
        if hints:
            self._loop.call_soon_threadsafe(self._send_hints, hints)

    def _send_hints(self, hints: dict[str, float]) -> None:
        live = sorted(self.workers)
        if not live:
            return  # no one to warm: the next owner starts cold
        batches: dict[str, list[tuple[str, float]]] = {}
        for persona, tick in hints.items():
            batches.setdefault(owner(persona, live), []).append((persona, tick))
        for w, batch in batches.items():
            self.bus.publish_nowait(worker_topic(self.pool, w, "hints"), HintBatch(hints=batch))

    # -- what the simulation asks ------------------------------------------------------------

    def adapters(self) -> set[str]:
        """The adapters every live worker serves (waits for a first worker)."""
        self._call(self._wait_for_workers("the list of adapters"))
        infos = list(self.workers.values())
        return set.intersection(*(set(i.adapters) for i in infos)) if infos else set()

    def stats(self) -> dict:
        c = self.counters
        return {"pool": self.pool, "workers": len(self.workers), **c,
                "prefix_cache_hit_rate": c["cached_tokens"] / c["prompt_tokens"] if c["prompt_tokens"] else 0.0}

    def close(self) -> None:
        if self._loop.is_closed() or not self._thread.is_alive():
            return
        try:
            self._call(self._aclose(), timeout=10)
        except Exception as e:  # at exit: say it, do not raise
            log.warning("closing the pool connection failed: %r", e)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()


def _value(done: TurnDone, schema: Any) -> Any:
    if done.text is None:
        return NoAction(done.error or "the worker gave no answer", done.seconds)
    try:
        return Answer(msgspec.json.decode(done.text, type=schema), done.text, done.seconds)
    except msgspec.ValidationError as e:  # the worker's grammar and this schema disagree: a bug, said plainly
        return NoAction(f"worker {done.worker}'s answer does not fit the action schema: {e}", done.seconds)
