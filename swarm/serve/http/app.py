"""The OpenAI-compatible routes (a Starlette app) on an engine worker shared with any other front end.

    GET  /v1/models, /v1/models/{id}      the base model and each LoRA adapter, each its own model id
    POST /v1/chat/completions             messages -> one answer, whole or streamed (server-sent events)
    POST /v1/completions                  a prompt -> its continuation, the same ways
    POST /v1/embeddings                   texts -> the engine's own sentence embeddings
    GET  /health, /metrics                liveness, and the engine's stats in the Prometheus text format

Each completion is one job on the worker, so concurrent requests share the engine's batched steps. A client
that goes away (a closed connection, mid-stream or not) has its request cancelled and its KV freed at the next
step. Every failure is an OpenAI error body with its status; nothing a client sends stops the server.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from swarm.bus.codec import guarded
from swarm.serve.http import api
from swarm.serve.http.errors import INVALID, UNAVAILABLE, ApiError, invalid_body
from swarm.serve.http.jobs import CompletionJob, Failed, Finished, Generation, Piece
from swarm.serve.http.metrics import CONTENT_TYPE, render
from swarm.serve.http.requests import chat_generation, embedding_texts, resolve_model, text_generation
from swarm.serve.http.stream import EventStream, usage

if TYPE_CHECKING:
    from swarm.serve.worker import EngineWorker

log = logging.getLogger("swarm.serve")

MAX_BODY = 16 * 2**20  # bytes of a request body: far more than any context holds as text
GONE = 499  # the status recorded for a request whose client went away first (nginx's "client closed request")

_encode = msgspec.json.Encoder().encode
Handler = Callable[[Request], Awaitable[Response]]


class OpenAIApp:
    """Serves the engine of `worker` as the model `model` (its adapters under their own names). With an
    `api_key`, the /v1 routes want `Authorization: Bearer <api_key>`; /health and /metrics are open."""

    def __init__(self, worker: EngineWorker, model: str, api_key: str | None = None):
        self.worker, self.engine, self.model, self.api_key = worker, worker.engine, model, api_key
        self.accepting = True  # False once the server stops: new work gets a 503
        self.created = int(time.time())
        self.answered: Counter[tuple[str, int]] = Counter()  # (route, status) -> requests, for /metrics
        routes = [("/health", "GET", self._health, False), ("/metrics", "GET", self._metrics, False),
                  ("/v1/models", "GET", self._models, True), ("/v1/models/{model:path}", "GET", self._model, True),
                  ("/v1/chat/completions", "POST", self._chat, True), ("/v1/completions", "POST", self._text, True),
                  ("/v1/embeddings", "POST", self._embeddings, True)]
        self.app = Starlette(routes=[Route(path, self._endpoint(path, fn, auth), methods=[method])
                                     for path, method, fn, auth in routes],
                             exception_handlers={HTTPException: self._http_error})

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)

    # -- around every route -------------------------------------------------------------------

    def _endpoint(self, path: str, fn: Handler, auth: bool) -> Handler:
        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                if auth:
                    self._authorize(request)
                response = await fn(request)
            except ApiError as e:
                response = _error(e)
            except ClientDisconnect:
                response = Response(status_code=GONE)
            except Exception as e:  # a bug: this request fails, the server goes on
                log.exception("%s %s failed", request.method, path)
                response = _error(ApiError(500, f"the server failed on this request: {e!r}", "server_error"))
            self.answered[path, response.status_code] += 1
            log.debug("%s %s: %d in %.0f ms", request.method, request.url.path, response.status_code,
                      1000 * (time.perf_counter() - t0))
            return response

        return endpoint

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "this server wants an API key: send the header Authorization: Bearer <key>",
                           INVALID, code="invalid_api_key")
        if not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "the API key is not this server's", INVALID, code="invalid_api_key")

    async def _http_error(self, request: Request, e: HTTPException) -> Response:
        """Starlette's own refusals (no such route, a method the route does not take) as OpenAI error bodies."""
        self.answered["other", e.status_code] += 1
        return _error(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}", INVALID))

    def _check_open(self) -> None:
        if not self.accepting:
            raise ApiError(503, "the server is shutting down and takes no new requests", UNAVAILABLE,
                           code="shutting_down")

    async def _read(self, request: Request, type: Any) -> Any:
        """The JSON body as `type`; 413 past MAX_BODY bytes (before reading more), 400 if it is not one."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise _too_large(int(declared))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise _too_large(size)
            chunks.append(chunk)
        try:
            return _decoder(type)(b"".join(chunks))
        except msgspec.ValidationError as e:
            raise invalid_body(e) from None
        except msgspec.DecodeError as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}", INVALID) from None

    # -- routes --------------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        status = "ok" if self.accepting else "shutting down"
        return _json({"status": status}, 200 if self.accepting else 503)

    async def _metrics(self, request: Request) -> Response:
        self._check_open()
        stats = await self.worker.call(lambda engine: engine.stats())  # read between steps, on the engine thread
        return Response(render(stats, self.answered), media_type=CONTENT_TYPE)

    async def _models(self, request: Request) -> Response:
        return _json(api.ModelList(data=self._cards()))

    async def _model(self, request: Request) -> Response:
        name = request.path_params["model"]
        resolve_model(name, self.model, self.engine.adapters())
        return _json(next(card for card in self._cards() if card.id == name))

    def _cards(self) -> list[api.ModelCard]:
        context = self.engine.max_context
        base = api.ModelCard(id=self.model, created=self.created, root=self.engine.source, max_model_len=context)
        return [base, *(api.ModelCard(id=name, created=self.created, parent=self.model, max_model_len=context)
                        for name in sorted(self.engine.adapters()))]

    async def _chat(self, request: Request) -> Response:
        req = await self._read(request, api.ChatCompletionRequest)
        return await self._generate(request, chat_generation(req, self._adapter(req.model)))

    async def _text(self, request: Request) -> Response:
        req = await self._read(request, api.CompletionRequest)
        return await self._generate(request, text_generation(req, self._adapter(req.model)))

    def _adapter(self, model: str) -> str | None:
        return resolve_model(model, self.model, self.engine.adapters())

    async def _embeddings(self, request: Request) -> Response:
        req = await self._read(request, api.EmbeddingRequest)
        self._adapter(req.model)  # any model id this server serves: the base model embeds for all of them
        texts = embedding_texts(req, self.engine.config.hidden_size)
        self._check_open()
        vectors, tokens = await self.worker.call(lambda engine: _embed(engine, texts))
        data = [api.Embedding(index=i, embedding=_vector(v, req.encoding_format)) for i, v in enumerate(vectors)]
        usage = api.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        return _json(api.EmbeddingList(data=data, model=req.model, usage=usage))

    # -- completions ---------------------------------------------------------------------------

    async def _generate(self, request: Request, gen: Generation) -> Response:
        """Run `gen` as a job. The status is decided by its first reply (an error in submitting it is a 4xx,
        not a stream that fails), so a streamed response starts with the first generated text."""
        self._check_open()
        job = CompletionJob(gen)
        self.worker.add(job, publish=_deliver)
        first = await self._first_reply(request, job)
        if first is None:
            return Response(status_code=GONE)
        if isinstance(first, Failed):
            raise first.error
        if gen.stream:
            return EventStream(job, first, self.worker.cancel)
        return _json(_whole(job, first))

    async def _first_reply(self, request: Request, job: CompletionJob) -> Piece | Finished | Failed | None:
        """The job's first reply, or None if the client went away first (the job is then cancelled)."""
        reply = asyncio.ensure_future(job.replies.get())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((reply, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not reply.done():
                reply.cancel()
                self.worker.cancel(job)
        return reply.result() if reply.done() and not reply.cancelled() else None


async def _deliver(job: CompletionJob, reply: Piece | Finished | Failed) -> None:
    job.replies.put_nowait(reply)


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body has been read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _whole(job: CompletionJob, reply: Finished) -> api.ChatCompletion | api.Completion:
    out, gen = reply.completion, job.gen
    if gen.chat:
        choice = api.ChatChoice(message=api.AssistantMessage(content=out.text), finish_reason=out.finish_reason)
        return api.ChatCompletion(id=job.id, created=job.created, model=gen.model, choices=[choice], usage=usage(reply))
    choice = api.TextChoice(text=out.text, finish_reason=out.finish_reason)
    return api.Completion(id=job.id, created=job.created, model=gen.model, choices=[choice], usage=usage(reply))


def _embed(engine, texts: list[str]) -> tuple[Any, int]:
    """(the texts' embeddings [n, hidden] float32, the tokens they took), on the engine thread."""
    tokens = sum(min(len(engine.tokenizer.encode(t)), engine.max_context) for t in texts)
    return engine.embed(texts).numpy(), tokens


def _vector(v, encoding: str) -> list[float] | str:
    return base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding == "base64" else v.tolist()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status, headers, media_type="application/json")


def _error(e: ApiError) -> Response:
    return _json(e.body(), e.status, e.headers())


def _too_large(size: int) -> ApiError:
    return ApiError(413, f"the request body has {size:,} bytes; at most {MAX_BODY:,} are read", INVALID,
                    code="request_too_large")


_decoders: dict[Any, Callable[[bytes], Any]] = {}


def _decoder(type: Any) -> Callable[[bytes], Any]:
    if type not in _decoders:
        _decoders[type] = guarded(msgspec.json.Decoder(type).decode)
    return _decoders[type]
