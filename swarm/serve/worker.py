"""The engine on a thread of its own, fed by the event loop.

`run` alternates two things: one engine turn on the engine thread (submit the jobs that arrived, batched
steps over every live request until one has a reply or something new arrived, collect each job's new
replies), then publishing those replies from the loop. Only a turn touches the engine, one at a time and
always on the same thread, and the loop never waits on a model step: while the engine computes, requests
keep arriving and replies keep leaving. Requests that arrive during a step join the next one, so concurrent
clients share batched steps.

Every front end on one engine shares one worker (`swarm serve --bus ... --http ...`): each job's replies go to
the `publish` it was added with, or to the worker's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from swarm.serve.job import Job, RequestError
from swarm.serve.protocol import Done, Error, Reply

if TYPE_CHECKING:
    from swarm.runtime import Engine

log = logging.getLogger("swarm.serve")

Publish = Callable[[Job, Reply], Awaitable[None]]
T = TypeVar("T")


class DoneHandle:
    """The handle of a job that finished when it was submitted (hints, embeddings, calls)."""

    done = True

    def cancel(self) -> None:
        pass


class EngineWorker:
    """Serves jobs on `engine`; `publish(job, reply)` sends each reply (on the event loop), unless the job was
    added with a `publish` of its own.

    A job has an `id`, `submit(engine)` (may raise RequestError), `progress()` (its new replies after each
    step, the last one `done`), `error(code, message)` (a final error reply) and, once submitted, a `handle`
    with `done` and `cancel()`.
    """

    def __init__(self, engine: Engine, publish: Publish | None = None):
        self.engine = engine
        self._publish = publish
        self._sinks: dict[Any, Publish] = {}  # job -> where its replies go, when not to `publish`
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="swarm-engine")
        self._new: list[Job] = []  # arrived, not yet submitted (the loop's side)
        self._live: list[Job] = []  # submitted, not finished (the turn's side)
        self._dropped: list[Job] = []  # to cancel without a reply at the next turn (the loop's side)
        self._gone: set[Any] = set()  # dropped jobs whose replies are not sent (the loop's side)
        self._cancel: str | None = None  # fail every job with this message at the next turn
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Jobs not finished yet."""
        return len(self._new) + len(self._live)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="swarm-engine-worker")

    def add(self, job: Job, publish: Publish | None = None) -> None:
        """Serve `job` from the next turn on; its replies go to `publish` (default: the worker's)."""
        if publish is not None:
            self._sinks[job] = publish
        self._new.append(job)
        self._idle.clear()
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """Stop serving `job` and send none of its replies (its client is gone): its engine request is
        cancelled at the next turn, which frees its KV blocks. A no-op for a job that has finished."""
        self._sinks.pop(job, None)
        if job in self._new:  # never submitted: nothing to free
            self._new.remove(job)
            return
        self._gone.add(job)
        self._dropped.append(job)
        self._wake.set()

    async def call(self, fn: Callable[[Engine], T]) -> T:
        """`fn(engine)` run on the engine thread between two steps (nothing else touches the engine then):
        its value, or the exception it raised."""
        future = asyncio.get_running_loop().create_future()
        self.add(_Call(fn), publish=lambda job, reply: _settle(future, reply))
        return await future

    async def drain(self, timeout: float | None) -> bool:
        """Wait until every job has finished; False if `timeout` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self, message: str) -> None:
        """Fail the jobs still running with `message` (code shutting_down), then stop."""
        if self._task is None:
            return
        if self.pending:
            self._cancel = message
            self._wake.set()
            await self._idle.wait()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._new and not self._live and not self._dropped and self._cancel is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            new, self._new = self._new, []
            dropped, self._dropped = self._dropped, []
            cancel, self._cancel = self._cancel, None
            replies = await loop.run_in_executor(self._thread, self._turn, new, dropped, cancel)
            for job, reply in replies:
                if job not in self._gone:
                    await self._send(job, reply)
            self._gone.difference_update(dropped)  # no reply of theirs is on its way any more

    async def _send(self, job: Job, reply: Reply) -> None:
        publish = self._sinks.pop(job, None) if reply.done else self._sinks.get(job)
        publish = publish or self._publish
        if publish is not None:
            try:
                await publish(job, reply)
            except Exception:  # the worker must go on serving the others
                log.exception("publishing a reply to request %r failed", job.id)
        if reply.done:
            _log_done(job, reply)

    # -- on the engine thread ------------------------------------------------------------

    def _turn(self, new: list[Job], dropped: list[Job], cancel: str | None) -> list[tuple[Job, Reply]]:
        replies = []
        self._drop(dropped)
        for job in new:
            try:
                job.submit(self.engine)
                self._live.append(job)
            except RequestError as e:
                replies.append((job, job.error(e.code, str(e))))
            except Exception as e:  # a bug must fail this request, not the server
                log.exception("submitting request %r failed", job.id)
                replies.append((job, job.error("internal", f"the server failed to take the request: {e!r}")))
        if cancel is not None:
            replies += [(job, job.error("shutting_down", cancel)) for job in self._cancel_live()]
        if not self._live:
            return replies
        try:
            # Steps that have nothing to publish need no trip through the loop (whole answers, MQTT requests that
            # do not stream): go on stepping until there is a reply, a job done (some end without one) or
            # something new to take in.
            while True:
                self.engine.step()
                for job in self._live:
                    replies += [(job, reply) for reply in job.progress()]
                if replies or self._new or self._dropped or self._cancel is not None or any(
                        job.handle.done for job in self._live):
                    break
        except Exception as e:
            log.exception("an engine step failed; failing the %d requests in it", len(self._live))
            return replies + [(job, job.error("internal", f"the engine failed: {e!r}")) for job in self._cancel_live()]
        self._live = [job for job in self._live if not job.handle.done]
        return replies

    def _drop(self, jobs: list[Job]) -> None:
        """Cancel these jobs' engine requests (freeing their KV) and stop serving them."""
        gone = set(jobs)
        for job in (j for j in self._live if j in gone):
            try:
                job.handle.cancel()
            except Exception:  # the job is dropped either way
                log.exception("cancelling request %r failed", job.id)
        self._live = [job for job in self._live if job not in gone]

    def _cancel_live(self) -> list[Job]:
        jobs, self._live = self._live, []
        for job in jobs:
            try:
                job.handle.cancel()
            except Exception:  # the engine is in trouble already; the job is failed either way
                log.exception("cancelling request %r failed", job.id)
        return jobs


def _log_done(job: Job, reply: Reply) -> None:
    """One debug line per finished request (replies of other kinds of job, say a pool's, are not logged)."""
    if not log.isEnabledFor(logging.DEBUG) or not isinstance(reply, (Done, Error)):
        return
    first = "" if job.first_token_s is None else f", first token after {job.first_token_s * 1000:.0f} ms"
    total = (time.perf_counter() - job.received) * 1000
    if isinstance(reply, Error):
        log.debug("request %r failed after %.0f ms (%s): %s", job.id, total, reply.code, reply.error)
    else:
        log.debug("request %r: %d prompt + %d new tokens in %.0f ms%s (%s)", job.id, reply.prompt_tokens,
                  reply.completion_tokens, total, first, reply.finish_reason)


class _Call:
    """`fn(engine)` as a job: it runs when submitted, and its one reply is the job itself, holding the value
    or the exception."""

    id = "call"
    done = True  # as a reply

    def __init__(self, fn: Callable[[Engine], Any]):
        self.fn, self.handle = fn, DoneHandle()
        self.value: Any = None
        self.exception: BaseException | None = None

    def submit(self, engine: Engine) -> None:
        try:
            self.value = self.fn(engine)
        except Exception as e:  # for the caller, not the worker
            self.exception = e

    def progress(self) -> list[_Call]:
        return [self]

    def error(self, code: str, message: str) -> _Call:
        self.exception = RuntimeError(message)
        return self


async def _settle(future: asyncio.Future, call: _Call) -> None:
    if future.done():  # the caller stopped waiting
        return
    if call.exception is not None:
        future.set_exception(call.exception)
    else:
        future.set_result(call.value)
