"""One completion request on the engine, in the shape `EngineWorker` drives: submit, then progress after each step.

Its replies (`Piece`s of streamed text, then one `Finished` or `Failed`) land in the job's own queue, which the
HTTP handler reads. Its engine calls run on the engine's thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarm.serve.http.errors import INVALID, SERVER, UNAVAILABLE, ApiError, bad_request
from swarm.serve.job import RequestError

if TYPE_CHECKING:
    from swarm.runtime import Completion, Engine, JsonSchema

log = logging.getLogger("swarm.serve")


@dataclass(frozen=True)
class Generation:
    """What one checked request asks of the engine (`swarm.serve.http.requests` builds it)."""

    model: str  # the model id the client named (echoed in the response)
    adapter: str | None
    messages: list[dict[str, str]] | None  # a chat, rendered with the model's chat template ...
    prompt: str | list[int] | None  # ... or a text completion's prompt, as text or token ids
    max_tokens: int | None  # None: as many as the context leaves
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...]
    schema: JsonSchema | None
    persona: str | None
    stream: bool
    include_usage: bool = False
    fit_history: bool = False

    @property
    def chat(self) -> bool:
        return self.messages is not None


@dataclass
class Piece:
    """New text of a streamed completion."""

    text: str
    done = False


@dataclass
class Finished:
    completion: Completion
    done = True


@dataclass
class Failed:
    error: ApiError
    done = True


class CompletionJob:
    def __init__(self, gen: Generation):
        self.gen = gen
        self.id = ("chatcmpl-" if gen.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.received = time.perf_counter()
        self.replies: asyncio.Queue[Piece | Finished | Failed] = asyncio.Queue()
        self.handle: Any = None
        self.streamed = ""  # the text sent in pieces so far

    def submit(self, engine: Engine) -> None:
        """Queue the request in the engine; raises RequestError saying what is wrong with it."""
        from swarm.runtime import PromptTooLongError, SamplingParams, SchemaError, SwarmError

        gen = self.gen
        try:
            ids = prompt_ids(engine, gen)
            params = SamplingParams(max_tokens=gen.max_tokens or room(engine, len(ids)), temperature=gen.temperature,
                                    top_p=gen.top_p, top_k=gen.top_k, seed=gen.seed, stop=gen.stop)
            self.handle = engine.submit(ids, params, persona=gen.persona, adapter=gen.adapter, schema=gen.schema)
        except PromptTooLongError as e:
            raise RequestError("too_long", str(e)) from None
        except SchemaError as e:
            raise RequestError("schema", str(e)) from None
        except (SwarmError, ValueError) as e:  # an empty prompt, a chat template that refuses the messages
            raise RequestError("bad_request", str(e)) from None

    def progress(self) -> list[Piece | Finished | Failed]:
        """The replies since the last call: the new text (when streaming) and, once done, the final reply."""
        handle, replies = self.handle, []
        piece = handle.new_text() if self.gen.stream else ""
        if piece:
            replies.append(Piece(piece))
            self.streamed += piece
        if handle.done:
            replies.append(self._final())
        return replies

    def _final(self) -> Finished | Failed:
        out = self.handle.result()
        if out.finish_reason == "error":
            # OpenAI answers a model that produced invalid content with a 500; at temperature 0 a retry would
            # fail the same way, so clients are told not to.
            return Failed(ApiError(500, f"the model could not follow the schema: {out.error}", SERVER,
                                   "response_format", "invalid_content", retry=False))
        if not out.text.startswith(self.streamed):  # the pieces sent cannot be taken back
            log.warning("request %s: the streamed text is not a prefix of the final text", self.id)
        return Finished(out)

    def error(self, code: str, message: str) -> Failed:
        """A final error reply for one of the worker's (or submit's) error codes."""
        param = "messages" if self.gen.chat else "prompt"
        if code == "too_long":
            return Failed(bad_request(message, param, "context_length_exceeded"))
        if code == "schema":
            return Failed(bad_request(message, "response_format", "invalid_schema"))
        if code == "bad_request":
            return Failed(ApiError(400, message, INVALID, param))
        if code == "shutting_down":
            return Failed(ApiError(503, message, UNAVAILABLE, code="shutting_down"))
        return Failed(ApiError(500, message, SERVER, code=code))


def prompt_ids(engine: Engine, gen: Generation) -> list[int]:
    """The prompt's token ids: the chat rendered by the model's template exactly as an in-process simulation
    renders it (`swarm.model.render_chat`, and with `fit_history` `fit_prompt`), or the text prompt."""
    from swarm.runtime.chat import fit_prompt, render_chat

    if gen.chat and gen.fit_history:
        return fit_prompt(engine, gen.messages, gen.max_tokens)
    text = render_chat(engine.tokenizer, gen.messages) if gen.chat else gen.prompt
    if not isinstance(text, str):
        return list(text)
    _check_chars(engine, text)
    return engine.tokenizer.encode(text)


def room(engine: Engine, prompt_tokens: int) -> int:
    """The most tokens a request with this prompt may generate: what is left of the context (and of the KV pool).
    At least 1, so that a prompt that fills the context gets the engine's own error."""
    pool = engine.pool.num_blocks * engine.pool.block_size
    return max(1, min(engine.max_context, pool) - prompt_tokens)


def _check_chars(engine: Engine, text: str) -> None:
    """Refuse a text far longer than the context could hold before paying to tokenize it (the engine's rule)."""
    from swarm.runtime import PromptTooLongError

    most = 2 * engine.tokenizer.max_token_chars * engine.max_context
    if len(text) > most:
        raise PromptTooLongError(f"the prompt has {len(text):,} characters; the model's context of "
                                 f"{engine.max_context} tokens holds at most {most:,}")
