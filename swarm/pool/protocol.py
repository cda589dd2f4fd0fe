"""Runtime workers on the broker: what a simulation and the workers of a pool say to each other.

    swarm/<pool>/runtime/workers/<id>/status   "online" / "offline" (retained; the last will says offline)
    swarm/<pool>/runtime/workers/<id>/info     WorkerInfo (retained): model, adapters, capacity
    swarm/<pool>/runtime/workers/<id>/turns    TurnBatch: turns for this worker to decide
    swarm/<pool>/runtime/workers/<id>/hints    HintBatch: when its personas act next
    swarm/<pool>/runtime/workers/<id>/embed    EmbedRequest
    swarm/<pool>/runtime/clients/<client>      what workers send back to one simulation: TurnDone, Embedded

A simulation sends each persona's turns to one worker, chosen by rendezvous hashing over the live workers
(`owner`): its KV stays warm there, a worker that joins takes over only the personas it now wins, and one
that leaves hands on only its own. Messages are msgpack (the bus's default).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from swarm.bus import topics

ONLINE, OFFLINE = "online", "offline"


class WorkerInfo(msgspec.Struct, kw_only=True):
    """What a worker serves: its model (the checkpoint reference), adapters, and how many turns it takes at once."""

    id: str
    model: str
    adapters: list[str] = []
    capacity: int = 256
    embed_dim: int = 0


class TurnJob(msgspec.Struct, kw_only=True, array_like=True):
    """One agent turn: chat messages answered under a JSON schema, sampled with `seed`."""

    id: int
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    max_tokens: int
    seed: int
    persona: str
    adapter: str | None = None
    temperature: float = 0.7
    top_p: float = 0.95


class TurnBatch(msgspec.Struct, kw_only=True):
    reply_to: str
    jobs: list[TurnJob]


class TurnDone(msgspec.Struct, kw_only=True, tag="turn"):
    """A turn's answer: the text generated (None with `error`), why it ended, and how long it took on the worker."""

    id: int
    worker: str
    text: str | None = None
    error: str | None = None
    finish_reason: str = "stop"
    seconds: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt's, served from the worker's prefix cache
    completion_tokens: int = 0
    done: bool = True  # every reply a worker sends is final


class Embedded(msgspec.Struct, kw_only=True, tag="embedded"):
    """The vectors of an EmbedRequest: float32 rows, little-endian, [count, dim]."""

    id: int
    worker: str
    dim: int = 0
    vectors: bytes = b""
    error: str | None = None
    done: bool = True


class HintBatch(msgspec.Struct, kw_only=True):
    hints: list[tuple[str, float]]  # (persona, the tick it acts next)
    prefetch: bool = True


class EmbedRequest(msgspec.Struct, kw_only=True):
    id: int
    reply_to: str
    texts: list[str]


Reply = TurnDone | Embedded


def worker_topic(pool: str, worker: str, what: str) -> str:
    return f"{topics.ROOT}/{topics.escape(pool)}/runtime/workers/{topics.escape(worker)}/{what}"


def client_topic(pool: str, client: str) -> str:
    return f"{topics.ROOT}/{topics.escape(pool)}/runtime/clients/{topics.escape(client)}"


def owner(persona: str, workers: list[str]) -> str:
    """The worker that decides `persona`'s turns: the highest hash of (persona, worker) wins (rendezvous
    hashing), so each worker joining or leaving moves only the personas it wins or held."""
    if not workers:
        raise ValueError("no live worker to choose from")
    return max(workers, key=lambda w: (_score(persona, w), w))


def _score(persona: str, worker: str) -> int:
    digest = hashlib.blake2b(f"{persona}\0{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def split_pool_url(url: str) -> tuple[str, str]:
    """"mqtt://host:port/POOL?..." -> ("mqtt://host:port?...", "POOL"): the broker and the pool's name."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"a worker pool is named by an mqtt:// or mqtts:// URL, not {url.split('@')[-1]!r}")
    pool = topics.unescape(parts.path.strip("/"))
    if not pool or "/" in parts.path.strip("/"):
        raise ValueError(f"name the pool as the URL's path, one level: mqtt://host:port/POOL (got path "
                         f"{parts.path!r})")
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")), pool
