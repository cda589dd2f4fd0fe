"""The OpenAI API's request and response bodies, as far as `swarm serve --http` serves them (msgspec Structs).

Requests ignore fields they do not name (clients send many); fields they name but do not support are
refused by `swarm.serve.http.requests` when they would change the answer. docs/http.md lists both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_EMBED_INPUTS = 2048  # texts per embeddings request, as OpenAI allows

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Tokens = Annotated[int, msgspec.Meta(ge=1)]
# one prompt or input as text or token ids, or a list of them (msgspec takes one list type in a union: the
# items are checked to be all of a kind in swarm.serve.http.requests)
Prompts = str | list[int | str | list[int]]
Stop = str | Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(max_length=MAX_STOP)] | None


# -- requests -------------------------------------------------------------------------------


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    """A text part of a message's content (the only kind this server reads)."""

    text: str


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None  # accepted and not rendered: the chat templates have no place for it


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class JsonSchemaSpec(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{1,64}$")]
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, tag="text", tag_field="type"):
    pass


class JsonObjectFormat(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class JsonSchemaFormat(msgspec.Struct, tag="json_schema", tag_field="type"):
    json_schema: JsonSchemaSpec


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class Sampling(msgspec.Struct, kw_only=True):
    """The fields chat and text completions share."""

    model: str
    max_tokens: Tokens | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 1.0
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    top_k: Annotated[int, msgspec.Meta(ge=0)] = 0  # an extension (vLLM has it too); 0 keeps every token
    seed: Int64 | None = None
    stop: Stop = None
    n: Annotated[int, msgspec.Meta(ge=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None  # accepted, not used
    # refused unless they leave the answer as it is (swarm.serve.http.requests)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None


class ChatCompletionRequest(Sampling, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: Tokens | None = None
    prompt_cache_key: str | None = None  # keys the engine's prefix cache by persona (see docs/http.md)
    fit_history: bool = False  # an extension: leave out the oldest exchanges until the prompt fits
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(Sampling, kw_only=True):
    max_tokens: Tokens | None = 16  # OpenAI's default for completions
    prompt: Prompts
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: Prompts
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


# -- responses ------------------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str
    refusal: None = None


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Head(msgspec.Struct, kw_only=True):
    """What every completion and chunk starts with; `object` says which it is."""

    id: str
    object: str
    created: int
    model: str


class ChatCompletion(Head, kw_only=True):
    object: str = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Head, kw_only=True):
    object: str = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class TextChoice(msgspec.Struct, kw_only=True):
    text: str
    index: int = 0
    finish_reason: str | None = None
    logprobs: None = None


class Completion(Head, kw_only=True):
    """A text completion, or (with `finish_reason` null and no usage) one chunk of a streamed one."""

    object: str = "text_completion"
    choices: list[TextChoice]
    usage: Usage | None = None


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "swarm"
    root: str | None = None  # the checkpoint folder, or an adapter's
    parent: str | None = None  # an adapter's base model
    max_model_len: int


class ModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[ModelCard]


class Embedding(msgspec.Struct, kw_only=True):
    object: str = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 with encoding_format=base64


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


def usage(prompt: int, completion: int, cached: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))
