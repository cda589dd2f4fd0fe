"""Hostile payloads on the bus: nested past any decoder's depth, floods of them, messages for agents who do not
exist. Each is one dropped message and at most one log line (rate limited), never a traceback or a raise."""

import asyncio
import logging

import aiomqtt
import msgspec
import pytest

from swarm.agents.actions import Wait
from swarm.bus import open_bus, topics
from swarm.bus.ratelog import RateLimitedLog
from swarm.events import Event, InboxMessage

from .test_simulation import Recording, tavern

DEEP_MSGPACK = b"\x91" * 5000 + b"\xc0"  # [[[...[nil]...]]], 5,000 levels
DEEP_JSON = b"[" * 5000 + b"]" * 5000
DEEP_INBOX = b'{"text": "hi", "sender": ' + b"[" * 3000 + b"]" * 3000 + b"}"  # deep where a string goes


def tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_rate_limited_log_says_the_first_few_then_a_count_per_interval(caplog):
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("swarm.test"), "bad things", burst=3, every=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="swarm.test"):
        for i in range(1000):  # a flood: 100 a second for 10 s
            clock.now = i / 100
            limited.warn("bad thing %d", i)
        assert [r.getMessage() for r in caplog.records] == ["bad thing 0", "bad thing 1", "bad thing 2"]
        clock.now = 10.0  # still flooding: one line with the count
        limited.warn("bad thing %d", 1000)
        assert caplog.records[-1].getMessage() == ("998 more bad things in the last 10 s (not logged one by one); "
                                                   "the latest: bad thing 1000")
        clock.now = 15.0
        limited.warn("bad thing %d", 1001)
        assert len(caplog.records) == 4  # counted, not logged
        clock.now = 100.0  # after a quiet spell: the count so far, then news again
        limited.warn("bad thing %d", 1002)
        assert [r.getMessage() for r in caplog.records[4:]] == [
            "1 more bad things in the last 90 s (not logged one by one); the latest: bad thing 1001", "bad thing 1002"]
    assert limited.count == 1003


@pytest.mark.parametrize("format, deep", [("msgpack", DEEP_MSGPACK), ("json", DEEP_JSON)], ids=["msgpack", "json"])
async def test_deeply_nested_payloads_are_dropped_like_any_bad_payload(format, deep, caplog):
    async with open_bus("local", format=format) as bus:
        typed = await bus.subscribe("swarm/v/events", type=Event)
        plain = await bus.subscribe("swarm/v/events")
        with caplog.at_level(logging.WARNING, logger="swarm.bus"):
            for _ in range(100):
                await bus.publish("swarm/v/events", deep)  # the local bus delivers on publish: it must not raise
            await bus.publish("swarm/v/events", Event(tick=1, seq=1, kind="say", text="good"))
    assert [m.payload.text for m in typed.drain()] == ["good"]
    assert [m.payload["text"] for m in plain.drain()] == ["good"]
    assert bus.stats["dropped"] == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 6, warnings  # 200 drops: the first few, then the rate limit holds
    assert any("nests too deeply" in w for w in warnings)
    assert not tracebacks(caplog)


async def test_a_flood_of_hostile_inbox_messages_costs_a_few_log_lines_and_the_good_one_arrives(mosquitto, caplog):
    sim = tavern(Recording(lambda t: Wait()), bus=mosquitto.url + "?format=json", name="village")
    await sim.atick()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        with caplog.at_level(logging.DEBUG):
            for i in range(300):
                await client.publish(topics.inbox("village", "Ann"), DEEP_JSON if i % 2 else DEEP_INBOX, qos=1)
                await client.publish(topics.inbox("village", f"Nobody{i}"), b'{"text": "hi"}', qos=1)
            await client.publish(topics.inbox("village", "Ann"), msgspec.json.encode(
                InboxMessage(text="the bridge is out", sender="player")), qos=1)
            deadline = asyncio.get_running_loop().time() + 10
            while sim.bus.stats["received"] + sim.bus.stats["dropped"] < 601:
                assert asyncio.get_running_loop().time() < deadline, sim.bus.stats
                await asyncio.sleep(0.02)
            events = await sim.atick()
    assert [e.text for e in events if e.kind == "inbox"] == ["player tells Ann: the bridge is out"]
    assert sim.bus.stats["dropped"] == 300
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not tracebacks(caplog)
    assert sum("dropped a message" in w for w in warnings) <= 5, warnings
    assert sum("unknown agent" in w for w in warnings) <= 5, warnings
    await sim.aclose()
