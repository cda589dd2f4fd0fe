"""The engine on a thread of its own, fed by the event loop.

`run` alternates two things: one engine turn on the engine thread (submit the jobs that arrived, one
batched step over every live request, collect each job's new replies), then publishing those replies
from the loop. Only a turn touches the engine, one at a time and always on the same thread, and the loop
never waits on a model step: while the engine computes, requests keep arriving and replies keep leaving.
Requests that arrive during a step join the next one, so concurrent clients share batched steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from swarm.serve.job import Job, RequestError
from swarm.serve.protocol import Done, Error, Reply

if TYPE_CHECKING:
    from swarm.runtime import Engine

log = logging.getLogger("swarm.serve")

Publish = Callable[[Job, Reply], Awaitable[None]]


class EngineWorker:
    """Serves jobs on `engine`; `publish(job, reply)` sends each reply (on the event loop)."""

    def __init__(self, engine: Engine, publish: Publish):
        self.engine = engine
        self._publish = publish
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="swarm-engine")
        self._new: list[Job] = []  # arrived, not yet submitted (the loop's side)
        self._live: list[Job] = []  # submitted, not finished (the turn's side)
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

    def add(self, job: Job) -> None:
        self._new.append(job)
        self._idle.clear()
        self._wake.set()

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
            if not self._new and not self._live and self._cancel is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            new, self._new = self._new, []
            cancel, self._cancel = self._cancel, None
            replies = await loop.run_in_executor(self._thread, self._turn, new, cancel)
            for job, reply in replies:
                try:
                    await self._publish(job, reply)
                except Exception:  # the worker must go on serving the others
                    log.exception("publishing a reply to request %r failed", job.id)
                if reply.done:
                    _log_done(job, reply)

    # -- on the engine thread ------------------------------------------------------------

    def _turn(self, new: list[Job], cancel: str | None) -> list[tuple[Job, Reply]]:
        replies = []
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
            self.engine.step()
            for job in self._live:
                replies += [(job, reply) for reply in job.progress()]
        except Exception as e:
            log.exception("an engine step failed; failing the %d requests in it", len(self._live))
            return replies + [(job, job.error("internal", f"the engine failed: {e!r}")) for job in self._cancel_live()]
        self._live = [job for job in self._live if not job.handle.done]
        return replies

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
