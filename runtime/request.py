"""A request's state inside the engine, and the handle its caller holds."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm.runtime.sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from swarm.runtime.engine import Engine
    from swarm.runtime.grammar import GrammarState

_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Completion:
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    # "stop" (a stop string or token, or a constrained value complete), "length", "cancelled", or "error"
    # (a constrained request whose grammar could not go on: see `error`). A constrained request ends
    # "stop" with its value by max_tokens: "length" cannot happen to it (see `budget_closed`).
    finish_reason: str | None = None
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (first admission)
    value: Any = None  # with a schema: the decoded value, set only when it is complete
    error: str | None = None  # why a constrained request ended with finish_reason "error"
    # With a schema: the value would not have been complete within max_tokens, so from some token on the
    # engine wrote the shortest way to close it (a string ends early, optional parts are left out). The
    # text before that token is the model's; finish_reason is "stop" and `value` is valid all the same.
    budget_closed: bool = False


class Request:
    """Tokens, KV blocks and sampling state of one request.

    `tokens` is the prompt followed by the output so far; the first
    `num_computed` of them have their keys and values in `blocks`.
    """

    def __init__(self, prompt_ids: list[int], params: SamplingParams, persona: Hashable = None,
                 adapter: Hashable = None, eos: frozenset[int] = frozenset(), grammar: GrammarState | None = None):
        self.id = next(_ids)
        self.params, self.persona, self.adapter = params, persona, adapter
        self.sampler = Sampler(params)
        self.grammar = grammar  # constrained decoding: the engine masks this request's logits
        self.tokens = list(prompt_ids)
        self.num_prompt = len(prompt_ids)
        self.num_computed = 0
        self.blocks: list[int] = []
        self.num_cached_blocks = 0  # leading full blocks already offered to the prefix cache
        self.lora_slot = -1  # the adapter's slot while running (-1: base model)
        self.status = Status.WAITING
        self.waited_steps = 0
        self.admitted = False
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eos))
        self.out = Completion(prompt_token_ids=list(prompt_ids))
        self.handle: RequestHandle | None = None

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[self.num_prompt :]

    @property
    def finished(self) -> bool:
        """It has its outcome (a request cancelled while a pass is in flight gives its blocks back after)."""
        return self.out.finish_reason is not None

    @property
    def num_pending(self) -> int:
        """Tokens whose KV still has to be computed before the next token can be sampled."""
        return len(self.tokens) - self.num_computed

    def append(self, token: int, decode: Callable[[list[int]], str]) -> None:
        """Add a sampled token and decide whether the request is done. A constrained request may take
        another token in its place: the one that closes its value within max_tokens."""
        out, p = self.out, self.params
        if self.grammar is not None:
            token, error = self.grammar.advance(token, p.max_tokens - len(out.token_ids))
        self.tokens.append(token)
        out.token_ids.append(token)
        if self.grammar is not None:
            self._end_constrained(error, decode)
            return
        if p.stop:
            text = decode(out.token_ids)
            cut = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=-1)
            if cut >= 0:
                out.text, out.finish_reason = text[:cut], "stop"
                return
        if token in self.stop_ids:
            out.finish_reason = "stop"
        elif len(out.token_ids) >= p.max_tokens:
            out.finish_reason = "length"
        if out.finish_reason:
            out.text = decode(out.token_ids)

    def _end_constrained(self, error: str | None, decode: Callable[[list[int]], str]) -> None:
        # The grammar alone decides the end (submit refuses stop strings and stop ids with a schema):
        # its mask admits end-of-sequence only once the value is complete, and its closing path has the
        # value complete by max_tokens, where the request ends with it even if more could follow (the
        # digits of a number); "length" stays for a grammar that would break that promise.
        out, grammar = self.out, self.grammar
        at_budget = len(out.token_ids) >= self.params.max_tokens
        if error is not None:
            self.fail(error, decode)
        elif grammar.done or (at_budget and grammar.accepting):
            out.text, out.finish_reason = decode(out.token_ids), "stop"
            out.value, error = grammar.result(out.text)
            out.budget_closed = grammar.budget_closed or not grammar.done
            if error is not None:
                self.fail(error, decode)
        elif at_budget:
            out.text, out.finish_reason = decode(out.token_ids), "length"

    def fail(self, error: str, decode: Callable[[list[int]], str]) -> None:
        """End with finish_reason "error": the request's grammar cannot go on."""
        self.out.text, self.out.finish_reason, self.out.error = decode(self.out.token_ids), "error", error
        self.out.value = None


class RequestHandle:
    """What `Engine.submit` returns: poll `done`, take `result()`, or `cancel()`."""

    def __init__(self, engine: Engine, request: Request):
        self._engine, self._request = engine, request
        self._decoded = (0, "")  # (tokens, their text): decoded once per new token, however many readers
        self._sent = 0  # characters `new_text` has handed out

    @property
    def id(self) -> int:
        return self._request.id

    @property
    def done(self) -> bool:
        return self._request.finished

    @property
    def token_ids(self) -> list[int]:
        """Tokens generated so far."""
        return list(self._request.out.token_ids)

    def partial_text(self) -> str:
        """The text generated so far, safe to show: a possible stop string's start and a half-decoded
        character at the end are held back until the next tokens settle them. Once done, the final text."""
        req = self._request
        if req.finished:
            return req.out.text
        ids = req.out.token_ids
        if self._decoded[0] != len(ids):
            self._decoded = (len(ids), self._engine.tokenizer.decode(ids))
        text = self._decoded[1]
        hold = max((len(s) for s in req.params.stop), default=1) - 1
        return text[: len(text) - hold].rstrip("\ufffd")

    def new_text(self) -> str:
        """The text generated since the last call ("" when none), safe to show as `partial_text` is: the
        pieces join into the final text (the stream every consumer of the engine reads)."""
        text = self.partial_text()
        piece, self._sent = text[self._sent :], max(self._sent, len(text))
        return piece

    def result(self) -> Completion:
        """The completion; steps the engine until this request is done if it is not yet."""
        while not self.done:
            self._engine.step()
        return self._request.out

    def cancel(self) -> None:
        """Stop generating and free this request's KV blocks (a no-op once done)."""
        self._engine.cancel(self._request)
