"""OpenAIModel: a simulation's turns decided by any server that speaks the OpenAI HTTP API: vLLM, SGLang,
llama.cpp's server, Ollama, LM Studio, or `swarm serve --http`.

    sim = Simulation.from_scenario("village", model=OpenAIModel("http://127.0.0.1:8000/v1", "Qwen/Qwen3-0.6B"))
    swarm run village --model openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-0.6B       # the key: OPENAI_API_KEY

Every turn of a tick is in flight at once, up to `concurrency` requests, and the server batches them. Each
turn's action schema, narrowed to the names valid this tick, goes as a strict `response_format: json_schema`
with the turn's seed, temperature, top_p and max_tokens. An answer that is not a value of the schema (a server
that does not enforce schemas, or an answer cut off at max_tokens) or a request the server refused is a
`NoAction` with the reason: that agent waits this tick. A tick none of whose turns reached the server stops
the run with ModelUnavailable, rather than ticking on with nobody acting.

A turn of a persona with a LoRA adapter asks for the adapter by name when the server lists a model of that
name (vLLM and `swarm serve --http` list each adapter as a model). Against swarm's own server (its model list
says `owned_by: swarm`) turns also carry two extensions: `fit_history` (the oldest exchanges are left out
until the prompt fits the context, as in process) and `prompt_cache_key` (the persona, which keys the prefix
cache); so a run there at temperature 0 gives the events the same run gives in process.

Memory relevance needs embeddings: from the server's `/v1/embeddings` when it has them; a server without them
(a model that does not embed) is said once in a warning, and hashed bags of words stand in (what a scripted
model uses: relevance by shared words).

Needs the official `openai` client: `pip install "swarm-sim[openai]"`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import numpy as np

from swarm.model import Answer, NoAction, Turn, TurnModel, check_sampling, hashed_bag_of_words, wire_schemas

log = logging.getLogger("swarm.openai")

SCHEME = "openai:"
SWARM_OWNER = "swarm"  # how swarm's own server signs its model list


class ModelUnavailable(RuntimeError):
    """The server could not be reached (or failed) for every turn of a tick."""


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`openai:BASE_URL#MODEL` -> (base_url, model); the model may be left out when the server has only one."""
    if not spec.startswith(SCHEME):
        raise ValueError(f"an OpenAI-compatible model is openai:BASE_URL#MODEL, got {spec!r}")
    url, _, model = spec[len(SCHEME):].partition("#")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"openai:BASE_URL#MODEL needs an http(s) base URL, e.g. openai:http://127.0.0.1:8000/v1#"
                         f"my-model; got {spec!r}")
    return url, model or None


class OpenAIModel(TurnModel):
    """Turns decided by the model `model` of the OpenAI-compatible server at `base_url` (".../v1").

    `api_key`: sent as a bearer token (default: OPENAI_API_KEY, or none). `concurrency`: requests in flight
    at once. `timeout`: seconds per request; the client retries a failed request `max_retries` times.
    `model=None` takes the server's model when it lists one (adapters aside).
    """

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 temperature: float = 0.7, top_p: float = 0.95, concurrency: int = 32, timeout: float = 300.0,
                 max_retries: int = 2, embed_dim: int = 256):
        try:
            import openai
        except ImportError:
            raise ImportError('OpenAIModel needs the openai client: pip install "swarm-sim[openai]"') from None
        check_sampling(temperature, top_p)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url, self.temperature, self.top_p = base_url.rstrip("/"), temperature, top_p
        self.embed_dim = embed_dim
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # local servers mostly take no key
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-turn")
        self._errors = (openai.APIConnectionError, openai.InternalServerError)  # the server, not the turn
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.served = self._list_models()  # model id -> its card, as the server lists them
        self.model = model or self._only_model()
        if self.model not in self.served:
            raise ValueError(f"the server at {self.base_url} has no model {self.model!r}; it serves: "
                             f"{', '.join(sorted(self.served)) or 'none'}")
        self.swarm = getattr(self.served[self.model], "owned_by", None) == SWARM_OWNER
        self.ref = f"{SCHEME}{self.base_url}#{self.model}"
        self._embeds: bool | None = None  # unknown until the first embed call

    def _list_models(self) -> dict[str, Any]:
        try:
            return {m.id: m for m in self.client.models.list()}
        except Exception as e:
            raise ModelUnavailable(f"could not list the models of {self.base_url}: {e}") from None

    def _only_model(self) -> str:
        """The one base model the server lists (its adapters, which name it as their parent, aside)."""
        bases = sorted(i for i, m in self.served.items() if getattr(m, "parent", None) is None)
        if len(bases) != 1:
            raise ValueError(f"the server at {self.base_url} serves {len(bases)} models; name one: "
                             f"openai:{self.base_url}#MODEL, MODEL one of {', '.join(bases)}")
        return bases[0]

    def adapters(self) -> set[str]:
        """The server's other models whose parent is this one (LoRA adapters, as vLLM and swarm list them)."""
        return {i for i, m in self.served.items() if getattr(m, "parent", None) == self.model}

    # -- turns ---------------------------------------------------------------------------------

    def decide(self, turns: Sequence[Turn]) -> list[Any]:
        t0 = time.perf_counter()
        futures = [self._pool.submit(self._turn, t, schema, t0) for t, schema in zip(turns, wire_schemas(turns),
                                                                                        strict=True)]
        values = [f.result() for f in futures]
        unreached = [v for v in values if isinstance(v, _Unreached)]
        if unreached and len(unreached) == len(values):
            raise ModelUnavailable(f"no turn of this tick reached {self.base_url}: {unreached[0].reason}")
        return [NoAction(v.reason, v.seconds) if isinstance(v, _Unreached) else v for v in values]

    def _turn(self, turn: Turn, schema: dict, t0: float) -> Any:
        r = turn.request
        extra: dict[str, Any] = {}
        if self.swarm:
            extra = {"fit_history": True, "prompt_cache_key": r.persona}
        model = r.adapter if r.adapter and r.adapter in self.served else self.model
        try:
            out = self.client.chat.completions.create(
                model=model, messages=r.messages, max_tokens=r.max_tokens, temperature=self.temperature,
                top_p=self.top_p, seed=turn.seed, extra_body=extra or None,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": r.kind, "schema": schema, "strict": True}})
        except self._errors as e:
            self._count(errors=1)
            return _Unreached(f"the server failed: {_reason(e)}", time.perf_counter() - t0)
        except Exception as e:  # refused (400, 404, ...): this turn only
            self._count(errors=1)
            return NoAction(f"the server refused the turn: {_reason(e)}", time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        self._count(requests=1)
        self._count_usage(out.usage)
        choice = out.choices[0]
        text = choice.message.content or ""
        try:
            return Answer(msgspec.json.decode(text, type=r.schema), text, seconds)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            self._count(invalid=1)
            if choice.finish_reason == "length":
                return NoAction(f"the model's answer was cut off (length) before it was complete: {text[:80]!r}",
                                seconds)
            return NoAction(f"the model's answer is not a valid action: {e}: {text[:80]!r}", seconds)

    def _count_usage(self, usage: Any) -> None:
        if usage is None:
            return
        details = getattr(usage, "prompt_tokens_details", None)
        self._count(prompt_tokens=usage.prompt_tokens or 0,
                    tokens_generated=usage.completion_tokens or 0,
                    cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details is not None else 0)

    def _count(self, **counts: int) -> None:
        with self._lock:
            self.counters.update(counts)

    # -- embeddings ----------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self._embeds is not False:
            try:
                out = self.client.embeddings.create(model=self.model, input=texts)
            except Exception as e:
                if self._embeds:  # it worked before: a failure now is the server's, said as such
                    raise ModelUnavailable(f"embeddings from {self.base_url} failed: {_reason(e)}") from None
                log.warning("the server at %s gives no embeddings for %s (%s); memory relevance uses hashed bags "
                            "of words instead", self.base_url, self.model, _reason(e))
                self._embeds = False
            else:
                self._embeds = True
                vectors = np.asarray([d.embedding for d in sorted(out.data, key=lambda d: d.index)], np.float32)
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                return vectors / np.maximum(norms, 1e-12)
        return hashed_bag_of_words(texts, self.embed_dim)

    def stats(self) -> dict:
        c = self.counters
        return {**c, "prefix_cache_hit_rate": c["cached_tokens"] / c["prompt_tokens"] if c["prompt_tokens"] else 0.0}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()


class _Unreached(msgspec.Struct):
    """A turn that never got an answer from the server (connection lost, a server error after retries)."""

    reason: str
    seconds: float


def _reason(e: Exception) -> str:
    """An OpenAI client error as one line: the server's own message when it sent one."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return f"{getattr(e, 'status_code', '')} {err['message']}".strip()
    return str(e) or type(e).__name__
