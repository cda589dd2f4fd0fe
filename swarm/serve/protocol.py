"""The runtime's wire protocol over the bus: what a client sends, what comes back, and on which topics.

    swarm/<name>/runtime/generate                requests (GenerateRequest), JSON or msgpack; each goes to
                                                 one server under <name> (a shared subscription)
    swarm/<name>/runtime/servers/<id>/status     one server's {"client": ..., "status": "online" | "offline"}
                                                 (retained; its last will)
    swarm/<name>/runtime/servers/<id>/info       the model it serves, its adapters and context (retained)
    swarm/<name>/runtime/status                  online while any server under <name> is, as far as they know
                                                 (retained; for clients of one server per name)
    swarm/<name>/runtime/info                    the info of the server that started last (retained)

Replies to one request are zero or more `Token`s, then exactly one `Done` or `Error` (both `"done": true`),
in the request's encoding, on its MQTT v5 Response Topic with its Correlation Data, or on its `reply_to`.
docs/protocol.md is generated from these types: `python -m swarm.serve.docs > docs/protocol.md`.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Annotated, Any, Literal

import msgspec

from swarm.bus import topics
from swarm.bus.codec import DecodeError, guarded

__all__ = ["ERROR_CODES", "ChatMessage", "Done", "Error", "GenerateRequest", "Info", "PersonaSpec", "Status", "Token",
           "check_reply_prefix", "check_reply_topic", "check_server_id", "client_id", "deeper_than",
           "default_server_id", "detect_format", "encode", "generate_topic", "info_topic", "read_request",
           "read_status", "server_info_topic", "server_status_topic", "share_group", "status_topic"]

Id = str | int | None
ErrorCode = Literal["bad_request", "unknown_adapter", "schema", "too_long", "shutting_down", "internal"]
ERROR_CODES: dict[str, str] = {  # each code, and when it is sent (docs/protocol.md lists them)
    "bad_request": "the payload is not JSON or msgpack, not an object, or nested too deeply, or a field is "
                   "missing, unknown, of the wrong type or out of range; or the prompt is empty, or a persona's "
                   "template is invalid",
    "unknown_adapter": "`adapter` names no adapter this server has (the message lists them; so does the info topic)",
    "schema": "the JSON schema cannot be used (llguidance rejects it, or `stop` was given with it), its shortest "
              "value does not fit `max_tokens` (the message says how many tokens it takes), or no value of it "
              "can be finished with this model's tokenizer",
    "too_long": "the prompt plus `max_tokens` does not fit in the model's context (or the KV cache)",
    "shutting_down": "the server is stopping: it takes no new requests, and fails those still running after its "
                     "grace period",
    "internal": "a bug in the server; the request failed, the server goes on (its log has the details)",
}


def _d(description: str, **constraints: Any) -> msgspec.Meta:
    """A field's description (in the JSON schema and docs/protocol.md) and its constraints."""
    return msgspec.Meta(description=description, **constraints)


class ChatMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One chat turn; the model's chat template renders the list."""

    role: Literal["system", "user", "assistant"]
    content: str


class PersonaSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The character who answers; its system message is written from these fields."""

    name: Annotated[str, _d("who speaks; also keys the prefix cache")]
    role: str = ""
    traits: str = ""
    goals: list[str] = []
    system_prompt: Annotated[str | None, _d("a template for the system message instead of the default one: "
                                            "{name}, {role}, {traits} and {goals} are filled in")] = None


class GenerateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request for one completion: exactly one of `prompt` and `messages`, the rest optional."""

    id: Annotated[Id, _d("echoed on every reply")] = None
    persona: Annotated[str | PersonaSpec | None, _d("the speaker: a name, or a persona that writes the system "
                                                    "message of `messages`")] = None
    adapter: Annotated[str | None, _d("a LoRA adapter of the server (Info.adapters); null: the base model")] = None
    prompt: Annotated[str | None, _d("raw text, continued as it is")] = None
    messages: Annotated[list[ChatMessage] | None, _d("chat turns, rendered with the model's chat template")] = None
    max_tokens: Annotated[int, _d("the most tokens to generate", ge=1)] = 64
    temperature: Annotated[float, _d("0 is greedy", ge=0)] = 1.0
    top_p: Annotated[float, _d("nucleus sampling; 1 keeps every token", gt=0, le=1)] = 1.0
    top_k: Annotated[int, _d("sample from the k likeliest tokens; 0 keeps every token", ge=0)] = 0
    seed: Annotated[int | None, _d("makes sampling repeatable")] = None
    stop: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]],
                    _d("strings that end the completion (cut before them); not with `schema`")] = []
    schema: Annotated[dict[str, Any] | None, _d("a JSON schema the completion must follow; Done.value then "
                                                "holds the decoded JSON")] = None
    stream: Annotated[bool, _d("false: no Token replies, only the final one")] = True
    reply_to: Annotated[str | None, _d("the reply topic, for clients without MQTT v5 (give an `id` too)")] = None

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must hold at least one message")
        if isinstance(self.persona, str) and not self.persona.strip():
            raise ValueError("`persona` must be a non-empty name")


class Token(msgspec.Struct, kw_only=True):
    """A piece of the completion's text, as soon as it is generated."""

    id: Id
    done: bool = False
    token: Annotated[str, _d("the next piece of text; the pieces add up to Done.text")]


class Done(msgspec.Struct, kw_only=True):
    """The last reply to a request that succeeded: the completion."""

    id: Id
    done: bool = True
    text: Annotated[str, _d("the whole completion")]
    finish_reason: Annotated[Literal["stop", "length", "cancelled"],
                             _d("stop: end of sequence, a stop string, or the schema's value complete; "
                                "length: max_tokens reached")]
    value: Annotated[Any, _d("with a schema: the decoded value, always complete by max_tokens")] = None
    budget_closed: Annotated[bool, _d("with a schema: the value would not have been complete within "
                                      "max_tokens, so the engine closed it (the text up to there is "
                                      "the model's)")] = False
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: Annotated[int, _d("prompt tokens served from the prefix cache")]


class Error(msgspec.Struct, kw_only=True):
    """The last reply to a request that failed."""

    id: Annotated[Id, _d("null when the request could not be read far enough to find it")]
    done: bool = True
    error: Annotated[str, _d("what is wrong, in words")]
    code: Annotated[ErrorCode, _d("what is wrong, for programs")]


class Status(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Presence, retained on a server's status topic (its last will says offline), and on the shared one."""

    client: Annotated[str, _d("the MQTT client id of the server that published it")]
    status: Literal["online", "offline"]
    stopped: Annotated[bool, _d("true when the server stopped cleanly; absent from its last will")] = False


class Info(msgspec.Struct, kw_only=True):
    """What a server serves, retained on its info topic and on the shared one."""

    model: str
    adapters: Annotated[list[str], _d("the names `adapter` may take")]
    max_context: Annotated[int, _d("tokens of prompt plus completion a request may use")]
    generate: Annotated[str, _d("the topic requests go to")]


Reply = Token | Done | Error


def check_reply_prefix(prefix: str | None) -> str | None:
    """`prefix` (None: the default rule) if replies may go under it, else raise ValueError saying why."""
    if prefix is None:
        return None
    prefix = prefix.rstrip("/")
    try:
        topics.validate_topic(prefix)
    except ValueError as e:
        raise ValueError(f"--reply-prefix {prefix!r} is not a topic prefix: {e}") from None
    if _reserved(prefix):
        raise ValueError(f"--reply-prefix {prefix!r} is under {topics.ROOT}/ or a $ topic: replies there could reach "
                         "agents' inboxes and the simulations' topics; pick a prefix of your own, e.g. game/replies")
    return prefix


def check_reply_topic(topic: str | None, prefix: str | None = None) -> str:
    """`topic` if a server with reply prefix `prefix` may publish replies there, else raise ValueError.

    With a prefix, a reply topic must be the prefix or under it (whole levels: `game/replies` allows
    `game/replies/7`, not `game/replies7`). Without one, any topic outside `swarm/` and the `$` topics:
    a request must not make the server write into an agent's inbox or any other topic of a simulation.
    """
    try:
        topics.validate_topic(topic)
    except ValueError as e:
        raise ValueError(f"it names no valid reply topic (an MQTT v5 Response Topic, or reply_to in the body): {e}") \
            from None
    if prefix is not None and topic != prefix and not topic.startswith(prefix + "/"):
        raise ValueError(f"its reply topic {topic[:200]!r} is not under this server's reply prefix {prefix!r}")
    if _reserved(topic):
        raise ValueError(f"its reply topic {topic[:200]!r} is under {topics.ROOT}/ or a $ topic, where no reply "
                         "may go (agents' inboxes are there)")
    return topic


def _reserved(topic: str) -> bool:
    return topic.startswith("$") or topic.split("/", 1)[0] == topics.ROOT


def generate_topic(name: str) -> str:
    return topics.runtime(name, "generate")


def status_topic(name: str) -> str:
    return topics.runtime(name, "status")


def info_topic(name: str) -> str:
    return topics.runtime(name, "info")


def server_status_topic(name: str, server_id: str) -> str:
    """One server's status under `name` (`topics.ANY` for every server's)."""
    return topics.runtime(name, "servers", server_id, "status")


def server_info_topic(name: str, server_id: str) -> str:
    return topics.runtime(name, "servers", server_id, "info")


def share_group(name: str) -> str:
    """The share group the servers under `name` read requests in: the broker gives each request to one."""
    return "swarm-serve-" + topics.escape(name)


def client_id(name: str, server_id: str) -> str:
    """The MQTT client id of server `server_id` under `name`, which names its persistent session."""
    return f"swarm-serve-{name}-{server_id}"


_SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_server_id(server_id: str) -> str:
    """`server_id` if it can name a server (1 to 64 letters, digits, '.', '_', '-'), else raise ValueError."""
    if not isinstance(server_id, str) or not _SERVER_ID.fullmatch(server_id):
        raise ValueError(f"a server id is 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or a "
                         f"digit), got {server_id!r}")
    return server_id


def default_server_id() -> str:
    """`<host name>-<pid>`: one per process, the same through its reconnects."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()).strip(".-")[:40] or "host"
    return f"{host}-{os.getpid()}"


def read_status(data: bytes) -> Status | None:
    """A status message in either encoding, or None when it is not one (a cleared topic, garbage)."""
    try:
        return (_read_status_msgpack if detect_format(data) == "msgpack" else _read_status_json)(data)
    except DecodeError:
        return None


MAX_DEPTH = 64  # levels of lists and objects a request may nest (a JSON schema needs far fewer)

_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
_MSGPACK_MAP = {0xDE, 0xDF, *range(0x80, 0x90)}  # the first byte of a msgpack map


def detect_format(data: bytes) -> str:
    """The payload's format: msgpack when it starts like a msgpack map, else JSON (garbage gets JSON errors)."""
    return "msgpack" if data[:1] and data[0] in _MSGPACK_MAP else "json"


def encode(format: str, reply: Any) -> bytes:
    return (_MSGPACK if format == "msgpack" else _JSON).encode(reply)


class BadRequest(msgspec.Struct, kw_only=True):
    """A request that cannot be served as sent; `id` and `reply_to` are what could be read of it."""

    id: Id = None
    reply_to: str | None = None
    error: str


def read_request(data: bytes) -> tuple[str, GenerateRequest | BadRequest]:
    """-> (the payload's format, the request or what is wrong with it). Never raises, whatever the bytes."""
    format = detect_format(data)
    try:
        raw = (_read_msgpack if format == "msgpack" else _read_json)(data)
    except DecodeError as e:
        return format, BadRequest(error=f"the request is not valid {'JSON' if format == 'json' else 'msgpack'}: {e}")
    if not isinstance(raw, dict):
        return format, BadRequest(error=f"a request is an object, got {type(raw).__name__}")
    # Read the id and reply topic on their own first, so that even a request with bad fields gets its answer.
    rid, reply_to = raw.get("id"), raw.get("reply_to")
    rid = rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None
    reply_to = reply_to if isinstance(reply_to, str) else None
    if deeper_than(raw, MAX_DEPTH):  # the schema is used as plain data: bound it before anything recurses
        return format, BadRequest(id=rid, reply_to=reply_to, error=f"the request nests deeper than {MAX_DEPTH} levels")
    try:
        return format, msgspec.convert(raw, GenerateRequest)
    except msgspec.ValidationError as e:
        return format, BadRequest(id=rid, reply_to=reply_to, error=f"invalid request: {e}")


_read_json = guarded(msgspec.json.Decoder().decode)
_read_msgpack = guarded(msgspec.msgpack.Decoder().decode)
_read_status_json = guarded(msgspec.json.Decoder(Status).decode)
_read_status_msgpack = guarded(msgspec.msgpack.Decoder(Status).decode)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether anything in `value` lies inside more than `limit` lists and dicts (found without recursing)."""
    level = [value]
    for _ in range(limit + 1):
        level = [v for c in level if isinstance(c, (list, dict)) for v in (c.values() if isinstance(c, dict) else c)]
        if not level:
            return False
    return True
