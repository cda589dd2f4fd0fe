"""A streamed completion: its replies as server-sent events, written straight to the connection.

One write per engine step that added text (to every streaming client, each step: the cost that matters at 32
clients), so the events of one reply go out together, and pieces that queued up while the connection was
busy go out as one. A client that goes away has its job cancelled (`EngineWorker.cancel`) at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec

from swarm.serve.http import api
from swarm.serve.http.jobs import CompletionJob, Failed, Finished, Piece

DONE = b"data: [DONE]\n\n"
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"x-accel-buffering", b"no")]  # proxies must pass events on at once

_encode = msgspec.json.Encoder().encode


class EventStream:
    """The ASGI response streaming `job` from its first reply `first` on; `cancel(job)` when the client leaves."""

    status_code = 200

    def __init__(self, job: CompletionJob, first: Piece | Finished | Failed, cancel: Callable[[CompletionJob], None]):
        self.job, self.first, self.cancel = job, first, cancel

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        job, finished = self.job, False
        watch = asyncio.ensure_future(self._watch(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            replies = [self.first]
            head = _event(chunk(job, role="assistant", text="")) if job.gen.chat else b""
            while True:
                finished = replies[-1].done
                await send({"type": "http.response.body", "body": head + events(job, replies), "more_body": True})
                if finished:
                    break
                head, replies = b"", [await job.replies.get()]
                while replies[-1] is not None and not replies[-1].done and not job.replies.empty():
                    replies.append(job.replies.get_nowait())
                if replies[-1] is None:  # the client went away
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            if not finished:
                self.cancel(job)

    async def _watch(self, receive: Any) -> None:
        """Cancel the job as soon as the client disconnects, and wake the writer up with None."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.cancel(self.job)
        self.job.replies.put_nowait(None)


def events(job: CompletionJob, replies: list[Piece | Finished | Failed]) -> bytes:
    """The events for consecutive replies: their pieces as one chunk; then, at the end, the finish reason, the
    usage (with stream_options.include_usage) and [DONE]; or an error event and [DONE]."""
    text = "".join(r.text for r in replies if isinstance(r, Piece))
    out = _event(chunk(job, text=text)) if text else b""
    last = replies[-1]
    if isinstance(last, Finished):
        out += _event(chunk(job, text=None if job.gen.chat else "", finish=last.completion.finish_reason))
        if job.gen.include_usage:
            out += _event(chunk(job, usage=usage(last)))
        out += DONE
    elif isinstance(last, Failed):
        out += _event(last.error.body()) + DONE
    return out


def chunk(job: CompletionJob, text: str | None = None, finish: str | None = None, role: str | None = None,
          usage: api.Usage | None = None) -> api.ChatCompletionChunk | api.Completion:
    """One streamed chunk: new text, or the finish reason, or (with no choices) the usage."""
    head = {"id": job.id, "created": job.created, "model": job.gen.model, "usage": usage}
    if job.gen.chat:
        choices = [] if usage else [api.ChunkChoice(delta=api.Delta(role=role, content=text), finish_reason=finish)]
        return api.ChatCompletionChunk(choices=choices, **head)
    return api.Completion(choices=[] if usage else [api.TextChoice(text=text, finish_reason=finish)], **head)


def usage(reply: Finished) -> api.Usage:
    out = reply.completion
    return api.usage(len(out.prompt_token_ids), len(out.token_ids), out.cached_tokens)


def _event(body: Any) -> bytes:
    return b"data: " + _encode(body) + b"\n\n"
