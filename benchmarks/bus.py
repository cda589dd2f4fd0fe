"""Bus throughput: LocalBus and MqttBus (Mosquitto on loopback), msgpack and JSON payloads.

    .venv/bin/python benchmarks/bus.py                       # starts its own mosquitto if installed
    .venv/bin/python benchmarks/bus.py --url mqtt://127.0.0.1:1883 --messages 50000

A publisher sends N small Structs shaped like a world event to one topic; one subscriber (a second
client, over MQTT) receives them all. Reported per bus and format: publish rate (how fast `publish`
returns: into the subscriber queues for LocalBus, into the outbox for MqttBus), delivered rate (first
publish to last message received), and payload bytes. Over MQTT the same trip is also timed with bare
aiomqtt clients (`plain_aiomqtt`): paho-mqtt's pure-Python packet handling, not the bus, sets the ceiling
there, and `vs_plain_aiomqtt` is the fraction of it MqttBus reaches. Publisher and subscriber share one
process and one event loop, so over MQTT they split one core. Prints one JSON object on stdout.
Target: LocalBus > 100k messages/s end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from urllib.parse import urlsplit

import msgspec

from swarm.bus import open_bus, topics
from swarm.bus.broker import Mosquitto

LOCAL_TARGET = 100_000  # messages/s, end to end
YIELD_EVERY = 1000  # a tick publishes in bursts; let subscribers run between them, as a real loop would
STALL = 5.0  # seconds without a message before the receiver gives up on the rest


class WorldEvent(msgspec.Struct):
    tick: int
    kind: str
    actor: str
    place: str
    text: str
    importance: float = 0.5


def start_broker() -> Mosquitto:
    """Start mosquitto on a free loopback port: `.url`, `.port`, `.stop()`. Raises if it is not installed."""
    return Mosquitto().start()


def measure(url: str | None, messages: int = 20000) -> dict:
    """Throughput of `messages` world events through the bus at `url` (None: LocalBus), in messages/s."""
    return asyncio.run(_measure(url, messages))


async def _measure(url: str | None, messages: int) -> dict:
    events = [WorldEvent(tick=i // 100, kind="say", actor=f"agent{i % 100}", place="tavern",
                         text="Good morning! Fresh bread at the bakery today.") for i in range(messages)]
    topic = topics.events("bench")
    publisher = open_bus(url, client_id="bench-pub")
    # Over MQTT the subscriber is a second client, so every message makes the full trip through the broker.
    subscriber = publisher if publisher.scheme == "local" else open_bus(url, client_id="bench-sub")
    await publisher.connect()
    if subscriber is not publisher:
        await subscriber.connect()
    try:
        sub = await subscriber.subscribe(topic, type=WorldEvent, max_queue=messages)
        received = 0
        last = time.perf_counter()

        async def consume() -> None:
            nonlocal received, last
            while received < messages:
                await sub.get(timeout=STALL)  # a broker that dropped messages ends the wait here
                received += len(sub.drain()) + 1
                last = time.perf_counter()

        consumer = asyncio.get_running_loop().create_task(consume())
        start = time.perf_counter()
        for i, event in enumerate(events):
            await publisher.publish(topic, event)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        published = time.perf_counter() - start
        await asyncio.gather(consumer, return_exceptions=True)
        delivered = last - start
        return {
            "bus": publisher.scheme, "format": publisher.format, "messages": messages, "received": received,
            "payload_bytes": len(publisher.codec.encode(events[0])),
            "publish_per_s": round(messages / published), "delivered_per_s": round(received / delivered),
            "dropped": publisher.stats["dropped"] + (subscriber.stats["dropped"] if subscriber is not publisher else 0),
        }
    finally:
        await publisher.close()
        if subscriber is not publisher:
            await subscriber.close()


def measure_plain_aiomqtt(url: str, messages: int = 20000, inflight: int = 20) -> dict:
    """The same trip with bare aiomqtt clients (MQTT v5, QoS 1, `inflight` publishes awaiting PUBACK at once):
    the ceiling MqttBus is measured against."""
    return asyncio.run(_measure_plain(url, messages, inflight))


async def _measure_plain(url: str, messages: int, inflight: int) -> dict:
    import aiomqtt

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    payload = msgspec.msgpack.encode(WorldEvent(tick=0, kind="say", actor="agent0", place="tavern",
                                                text="Good morning! Fresh bread at the bakery today."))
    v5 = aiomqtt.ProtocolVersion.V5
    async with aiomqtt.Client(host, port, protocol=v5) as sub, \
            aiomqtt.Client(host, port, protocol=v5, max_inflight_messages=inflight) as pub:
        pub.pending_calls_threshold = 10 * inflight
        await sub.subscribe("bench/plain", qos=1)
        received = 0
        last = time.perf_counter()

        async def consume() -> None:
            nonlocal received, last
            while received < messages:
                await asyncio.wait_for(anext(sub.messages), STALL)
                received += 1
                last = time.perf_counter()

        consumer = asyncio.get_running_loop().create_task(consume())
        left = messages

        async def pump() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await pub.publish("bench/plain", payload, qos=1, timeout=60)

        start = time.perf_counter()
        await asyncio.gather(*(pump() for _ in range(inflight)))
        await asyncio.gather(consumer, return_exceptions=True)
    return {"messages": messages, "received": received, "payload_bytes": len(payload),
            "delivered_per_s": round(received / (last - start))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an MQTT broker to use (default: start mosquitto on a free port)")
    p.add_argument("--messages", type=int, default=20000)
    args = p.parse_args(argv)
    result: dict = {"config": {"messages": args.messages, "python": platform.python_version(),
                               "msgspec": msgspec.__version__, "yield_every": YIELD_EVERY}}
    result["local"] = {fmt: measure(f"local?format={fmt}", args.messages) for fmt in ("msgpack", "json")}
    worst = min(r["delivered_per_s"] for r in result["local"].values())
    result["local"]["target"] = f"> {LOCAL_TARGET} messages/s delivered"
    result["local"]["meets_target"] = worst > LOCAL_TARGET
    broker = None
    url = args.url
    if url is None:
        try:
            broker = start_broker()
            url = broker.url
        except RuntimeError as exc:
            result["mqtt"] = {"skipped": str(exc)}
    try:
        if url is not None:
            result["mqtt"] = {"broker": "mosquitto (started here)" if broker else url}
            plain = measure_plain_aiomqtt(url, args.messages)
            for fmt in ("msgpack", "json"):
                run = result["mqtt"][fmt] = measure(f"{url}?format={fmt}", args.messages)
                run["vs_plain_aiomqtt"] = round(run["delivered_per_s"] / plain["delivered_per_s"], 2)
            result["mqtt"]["plain_aiomqtt"] = plain
    finally:
        if broker is not None:
            broker.close()
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
