"""Requests checked and turned into what the engine runs: every refusal here is a 400 (or 404) that says why.

The rules are the contract docs/http.md states: which model id is which adapter, how `response_format`
becomes a grammar (the schema's property order is the output's, as OpenAI documents), which fields are
accepted but unused, and which are refused because they would change the answer.
"""

from __future__ import annotations

from typing import Any

from swarm.serve.http.api import (
    MAX_EMBED_INPUTS,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
    Prompts,
    Sampling,
)
from swarm.serve.http.errors import NOT_FOUND, ApiError, bad_request, unsupported
from swarm.serve.http.jobs import Generation
from swarm.serve.protocol import MAX_DEPTH, deeper_than

MAX_CACHE_KEY = 256  # characters of a prompt_cache_key


def resolve_model(name: str, served: str, adapters: list[str]) -> str | None:
    """The adapter a model id names (None: the base model); 404 for an id this server does not serve."""
    if name == served:
        return None
    if name in adapters:
        return name
    ids = ", ".join(repr(i) for i in [served, *sorted(adapters)])
    raise ApiError(404, f"the model {name!r} does not exist on this server; it serves {ids} (GET /v1/models)",
                   NOT_FOUND, "model", "model_not_found")


def chat_generation(req: ChatCompletionRequest, adapter: str | None) -> Generation:
    _check_sampling(req)
    for field, value in (("top_logprobs", req.top_logprobs), ("tools", req.tools), ("functions", req.functions)):
        if value:
            raise unsupported(field, field)
    if req.tool_choice not in (None, "none"):
        raise unsupported("tool_choice", "tool_choice other than \"none\"")
    if not req.messages:
        raise bad_request("messages must hold at least one message", "messages")
    if req.max_tokens is not None and req.max_completion_tokens not in (None, req.max_tokens):
        raise bad_request("max_tokens and max_completion_tokens differ: give one of them", "max_completion_tokens")
    max_tokens = req.max_completion_tokens or req.max_tokens
    if req.fit_history and max_tokens is None:
        raise bad_request("fit_history needs max_completion_tokens (or max_tokens): the history is fitted to leave "
                          "room for them", "fit_history")
    if req.prompt_cache_key is not None and not 0 < len(req.prompt_cache_key) <= MAX_CACHE_KEY:
        raise bad_request(f"prompt_cache_key is 1 to {MAX_CACHE_KEY} characters", "prompt_cache_key")
    return Generation(model=req.model, adapter=adapter, messages=[_turn(m, i) for i, m in enumerate(req.messages)],
                      prompt=None, max_tokens=max_tokens, persona=req.prompt_cache_key, fit_history=req.fit_history,
                      **_sampling(req))


def text_generation(req: CompletionRequest, adapter: str | None) -> Generation:
    _check_sampling(req)
    if req.echo:
        raise unsupported("echo", "echo")
    if req.suffix:
        raise unsupported("suffix", "suffix")
    if req.best_of not in (None, 1):
        raise unsupported("best_of", "best_of > 1")
    return Generation(model=req.model, adapter=adapter, messages=None, prompt=_prompt(req.prompt),
                      max_tokens=req.max_tokens, persona=None, **_sampling(req))


def embedding_texts(req: EmbeddingRequest, hidden_size: int) -> list[str]:
    """The texts to embed; token ids are refused (the engine embeds text)."""
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise bad_request("input must hold at least one text", "input")
    if not all(isinstance(t, str) for t in texts):
        raise unsupported("input", "token ids as input (send the text)")
    if len(texts) > MAX_EMBED_INPUTS:
        raise bad_request(f"input holds {len(texts)} texts; at most {MAX_EMBED_INPUTS} per request", "input")
    if req.dimensions is not None and req.dimensions != hidden_size:
        raise unsupported("dimensions", f"dimensions other than the model's {hidden_size}")
    return texts


def _check_sampling(req: Sampling) -> None:
    if req.n != 1:
        raise unsupported("n", "n > 1 (send n requests instead: concurrent requests share the engine's batches)")
    for field in ("presence_penalty", "frequency_penalty"):
        if getattr(req, field) not in (None, 0):
            raise unsupported(field, f"a nonzero {field}")
    if req.logit_bias:
        raise unsupported("logit_bias", "logit_bias")
    if req.logprobs is not None and req.logprobs is not False:
        raise unsupported("logprobs", "logprobs")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options is only allowed with stream: true", "stream_options")


def _sampling(req: Sampling) -> dict[str, Any]:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if "" in stop:
        raise bad_request("stop strings must not be empty", "stop")
    schema = _schema(req)
    if schema is not None and stop:
        raise bad_request("stop cannot be combined with a JSON response_format: the schema decides where the "
                          "answer ends", "stop")
    return {"temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k, "seed": req.seed, "stop": stop,
            "schema": schema, "stream": req.stream,
            "include_usage": bool(req.stream_options and req.stream_options.include_usage)}


def _schema(req: Sampling) -> Any:
    """The grammar of `response_format`: a JSON schema with its properties written in the order it lists them
    (`JsonSchema(..., keep_order=True)`, what the engine compiles a msgspec type to), or any JSON object."""
    from swarm.runtime import JsonSchema, SchemaError

    fmt = req.response_format
    if isinstance(fmt, JsonObjectFormat):
        return JsonSchema({"type": "object"}, keep_order=True)
    if not isinstance(fmt, JsonSchemaFormat):
        return None
    schema = fmt.json_schema.schema
    if schema is None:
        raise bad_request("response_format.json_schema.schema is required", "response_format")
    if deeper_than(schema, MAX_DEPTH):  # llguidance and the schema walk recurse: bound it first
        raise bad_request(f"the JSON schema nests deeper than {MAX_DEPTH} levels", "response_format")
    try:
        return JsonSchema(schema, keep_order=True)
    except SchemaError as e:
        raise bad_request(str(e), "response_format", "invalid_schema") from None


def _turn(message: ChatMessage, i: int) -> dict[str, str]:
    """One message as the chat template takes it. A developer message is a system message (OpenAI's newer name
    for it); text parts are joined with newlines."""
    content = message.content
    if content is None:
        raise bad_request(f"messages[{i}].content is required (tool calls are not supported)", f"messages[{i}].content")
    if not isinstance(content, str):
        content = "\n".join(part.text for part in content)
    return {"role": "system" if message.role == "developer" else message.role, "content": content}


def _prompt(prompt: Prompts) -> str | list[int]:
    """One prompt, as text or token ids; more than one is refused (send one request each)."""
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise bad_request("prompt must not be empty", "prompt")
    if all(isinstance(t, int) for t in prompt):
        return prompt
    if any(isinstance(t, int) for t in prompt):
        raise bad_request("prompt mixes token ids with texts or lists", "prompt")
    if len(prompt) > 1:
        raise unsupported("prompt", "more than one prompt per request (send one request each)")
    return prompt[0]
