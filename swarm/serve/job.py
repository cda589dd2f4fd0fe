"""One request being served: checked and submitted to the engine, then turned into replies as it runs.

A job's engine calls (`submit`, `progress`, `cancel`) run on the engine's thread, never on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from swarm.agents.persona import Persona
from swarm.serve.protocol import ChatMessage, Done, Error, ErrorCode, GenerateRequest, PersonaSpec, Reply, Token

if TYPE_CHECKING:
    from swarm.runtime import Engine, RequestHandle


class RequestError(Exception):
    """A request the engine cannot take: the message goes back to the client with `code`."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Job:
    request: GenerateRequest
    format: str  # the request's encoding, and so its replies'
    topic: str  # where its replies go
    correlation: bytes | None  # MQTT v5 Correlation Data, echoed on every reply
    received: float = field(default_factory=time.perf_counter)
    handle: RequestHandle | None = None
    first_token_s: float | None = None  # seconds from receipt to the first generated token

    @property
    def id(self) -> str | int | None:
        return self.request.id

    def error(self, code: ErrorCode, message: str) -> Error:
        return Error(id=self.id, error=message, code=code)

    def submit(self, engine: Engine) -> None:
        """Queue the request in the engine; raises RequestError saying what is wrong with it."""
        from swarm.runtime import JsonSchema, PromptTooLongError, SamplingParams, SchemaError

        req = self.request
        if req.adapter is not None and req.adapter not in engine.adapters():
            known = ", ".join(sorted(engine.adapters())) or "none"
            raise RequestError("unknown_adapter", f"unknown adapter {req.adapter!r}; this server has: {known}")
        try:
            persona = _persona(req.persona)
            prompt = req.prompt if req.messages is None else _render(engine, persona, req.messages)
            params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                    top_k=req.top_k, seed=req.seed, stop=tuple(req.stop))
            schema = None if req.schema is None else JsonSchema(req.schema)
            self.handle = engine.submit(prompt, params, persona=None if persona is None else persona.name,
                                        adapter=req.adapter, schema=schema)
        except PromptTooLongError as e:
            raise RequestError("too_long", str(e)) from None
        except SchemaError as e:
            raise RequestError("schema", str(e)) from None
        except ValueError as e:  # a persona template, sampling parameters, an empty prompt
            raise RequestError("bad_request", str(e)) from None

    def progress(self) -> list[Reply]:
        """The replies since the last call: the new text (when streaming) and, once done, the final reply."""
        handle, replies = self.handle, []
        if self.first_token_s is None and (handle.done or handle.token_ids):
            self.first_token_s = time.perf_counter() - self.received
        piece = handle.new_text() if self.request.stream else ""
        if piece:
            replies.append(Token(id=self.id, token=piece))
        if handle.done:
            replies.append(self._final())
        return replies

    def _final(self) -> Reply:
        out = self.handle.result()
        if out.finish_reason == "error":
            return self.error("schema", f"the model could not follow the schema: {out.error}")
        return Done(id=self.id, text=out.text, finish_reason=out.finish_reason, value=out.value,
                    budget_closed=out.budget_closed, prompt_tokens=len(out.prompt_token_ids),
                    completion_tokens=len(out.token_ids), cached_tokens=out.cached_tokens)


def _persona(spec: str | PersonaSpec | None) -> Persona | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return Persona(name=spec)
    return Persona(name=spec.name, role=spec.role, traits=spec.traits, goals=tuple(spec.goals),
                   system_prompt=spec.system_prompt)


def _render(engine: Engine, persona: Persona | None, messages: list[ChatMessage]) -> str:
    from swarm.runtime.chat import render_chat

    turns = [{"role": m.role, "content": m.content} for m in messages]
    if persona is not None and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": persona.system_message("")})
    return render_chat(engine.tokenizer, turns)
