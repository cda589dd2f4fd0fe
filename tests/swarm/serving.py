"""A client of `swarm serve` for the tests: sends one request the way a program in another language would
(raw JSON or msgpack bytes) and collects its replies up to the final one."""

from __future__ import annotations

import itertools
import json

import msgspec

from swarm.bus import Bus
from swarm.serve import generate_topic

_ids = itertools.count()


def encode(request: dict, format: str) -> bytes:
    return json.dumps(request).encode() if format == "json" else msgspec.msgpack.encode(request)


def decode(payload: bytes, format: str) -> dict:
    return json.loads(payload) if format == "json" else msgspec.msgpack.decode(payload)


async def ask(bus: Bus, name: str, request: dict | bytes, format: str = "json", v5: bool = True,
              timeout: float = 30.0) -> list[dict]:
    """Every reply to `request`, in order, up to the one with done=true. `v5=False` names the reply topic in
    the body (`reply_to`) instead of the MQTT v5 Response Topic; replies must then come without correlation."""
    n = next(_ids)
    topic, correlation = f"client/{bus.client_id}/{n}", f"req-{n}".encode()
    sub = await bus.subscribe(topic, type=bytes)
    try:
        if v5:
            data = request if isinstance(request, bytes) else encode(request, format)
            await bus.publish(generate_topic(name), data, reply_to=topic, correlation=correlation)
        else:
            await bus.publish(generate_topic(name), encode({**request, "reply_to": topic}, format))
        replies = []
        while not replies or not replies[-1]["done"]:
            msg = await sub.get(timeout=timeout)
            assert msg.correlation == (correlation if v5 else None)
            replies.append(decode(msg.payload, format))
        return replies
    finally:
        await sub.close()


def text_of(replies: list[dict]) -> str:
    """The streamed pieces joined."""
    return "".join(r["token"] for r in replies if not r["done"])
