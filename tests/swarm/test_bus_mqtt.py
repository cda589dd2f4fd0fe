"""MqttBus against a real Mosquitto broker (the `mosquitto` fixture starts one per test)."""

import asyncio
import json
import logging
import sys
import time

import aiomqtt
import msgspec
import pytest

from swarm.bus import BusError, MqttBus, open_bus, topics

from .conftest import free_port


class Event(msgspec.Struct):
    tick: int
    text: str


class Ping(msgspec.Struct):
    n: int


class Pong(msgspec.Struct):
    n: int


def plain_client(mosquitto) -> aiomqtt.Client:
    """A bare MQTT client, as another language's program would be."""
    return aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5)


async def payloads(sub, n):
    return [(await sub.get(timeout=5)).payload for _ in range(n)]


async def test_wildcards_deliver_each_message_once_to_each_subscription(mosquitto):
    async with open_bus(mosquitto.url) as pub, open_bus(mosquitto.url) as bus:
        everything = await bus.subscribe("swarm/v/#", type=Event)
        inboxes = await bus.subscribe(topics.inbox("v", topics.ANY), type=Event)
        everything_too = await bus.subscribe("swarm/v/#", type=Event)  # same pattern: one broker subscription
        await pub.publish(topics.inbox("v", "Mira/2"), Event(1, "to mira"))
        await pub.publish(topics.events("v"), Event(2, "an event"))
        await pub.publish("swarm/elsewhere/events", Event(3, "not ours"))
        await pub.publish(topics.inbox("v", "end"), Event(4, "last"))

        assert [e.tick for e in await payloads(everything, 3)] == [1, 2, 4]
        assert [e.tick for e in await payloads(everything_too, 3)] == [1, 2, 4]
        inbox = [await inboxes.get(timeout=5) for _ in range(2)]
        assert [(topics.levels(m.topic)[3], m.payload.tick) for m in inbox] == [("Mira/2", 1), ("end", 4)]
        await asyncio.sleep(0.05)  # anything duplicated would have arrived by now
        assert everything.drain() == everything_too.drain() == inboxes.drain() == []
        assert bus.stats["received"] == 8 and bus.stats["dropped"] == 0

        await everything.close()  # the other subscription to the same pattern keeps receiving
        await pub.publish(topics.events("v"), Event(5, "after close"))
        assert (await everything_too.get(timeout=5)).payload.tick == 5


async def test_request_reply(mosquitto):
    async with open_bus(mosquitto.url, client_id="worker") as server, open_bus(mosquitto.url) as client:
        async def double(msg):
            await asyncio.sleep(0.001 * (msg.payload.n % 5))  # answer out of order
            return Pong(2 * msg.payload.n)

        await server.serve(topics.runtime("v", "double"), double, type=Ping)
        replies = await asyncio.gather(*(client.request(topics.runtime("v", "double"), Ping(i), type=Pong)
                                         for i in range(20)))
        assert [r.n for r in replies] == [2 * i for i in range(20)]
        with pytest.raises(asyncio.TimeoutError):
            await client.request(topics.runtime("v", "nobody"), Ping(1), timeout=0.2)


async def test_reply_to_and_correlation_reach_a_plain_v5_client(mosquitto):
    async with open_bus(mosquitto.url) as bus, plain_client(mosquitto) as other:
        await other.subscribe("swarm/v/replies", qos=1)
        for n in range(3):
            await bus.publish("swarm/v/replies", n, reply_to="swarm/v/back" if n == 0 else None, correlation=b"c7")
        got = [await asyncio.wait_for(anext(other.messages), 5) for _ in range(3)]
        assert [msgspec.msgpack.decode(m.payload) for m in got] == [0, 1, 2]
        assert [m.properties.CorrelationData for m in got] == [b"c7"] * 3
        assert got[0].properties.ResponseTopic == "swarm/v/back"
        assert not hasattr(got[1].properties, "ResponseTopic")


async def test_json_format_is_readable_and_writable_by_any_client(mosquitto):
    async with open_bus(mosquitto.url + "?format=json") as bus, plain_client(mosquitto) as other:
        assert bus.format == "json"
        await other.subscribe("swarm/v/events", qos=1)
        sub = await bus.subscribe("swarm/v/places/+", type=Event)

        await bus.publish("swarm/v/events", Event(1, "héllo"))
        message = await asyncio.wait_for(anext(other.messages), 5)
        assert json.loads(message.payload) == {"tick": 1, "text": "héllo"}

        await other.publish("swarm/v/places/square", json.dumps({"tick": 2, "text": "from outside"}), qos=1)
        assert (await sub.get(timeout=5)).payload == Event(2, "from outside")


async def test_bad_payloads_from_a_plain_client_are_dropped_and_the_next_one_arrives(mosquitto, caplog):
    async with open_bus(mosquitto.url, max_payload=1000) as bus, plain_client(mosquitto) as other:
        sub = await bus.subscribe("swarm/v/events", type=Event)
        with caplog.at_level(logging.WARNING, logger="swarm.bus"):
            await other.publish("swarm/v/events", b"\xc1 not msgpack", qos=1)
            await other.publish("swarm/v/events", msgspec.msgpack.encode({"tick": "x"}), qos=1)
            await other.publish("swarm/v/events", b"\x00" * 2000, qos=1)
            await other.publish("swarm/v/events", msgspec.msgpack.encode(Event(7, "good")), qos=1)
            assert (await sub.get(timeout=5)).payload == Event(7, "good")
        assert bus.stats["dropped"] == 3
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 3 and all("swarm/v/events" in w for w in warnings)
        assert "2000 bytes" in warnings[2]
        with pytest.raises(BusError, match="max_payload"):
            await bus.publish("swarm/v/events", b"\x00" * 1001)


async def test_retained_world_snapshot_reaches_late_subscribers(mosquitto):
    world = topics.world("v")
    async with open_bus(mosquitto.url) as sim:
        await sim.publish(world, Event(1, "old"), retain=True)
        await sim.publish(world, Event(2, "snapshot"), retain=True)
        assert await sim.flush(5)
        async with open_bus(mosquitto.url) as viewer:
            first = await viewer.subscribe("swarm/v/#", type=Event)
            got = await first.get(timeout=5)
            assert (got.payload, got.retain) == (Event(2, "snapshot"), True)
            # A second subscriber to the same pattern gets the snapshot too; the first does not get it again.
            second = await viewer.subscribe("swarm/v/#", type=Event)
            assert (await second.get(timeout=5)).payload == Event(2, "snapshot")
            await sim.publish(world, Event(3, "live"), retain=True)
            live = [await first.get(timeout=5), await second.get(timeout=5)]
            assert [(m.payload.tick, m.retain) for m in live] == [(3, False), (3, False)]

        await sim.publish(world, b"", retain=True)  # clears it
        assert await sim.flush(5)
    async with open_bus(mosquitto.url) as viewer:
        sub = await viewer.subscribe(world, type=Event)
        with pytest.raises(asyncio.TimeoutError):
            await sub.get(timeout=0.2)


CHILD = """
import asyncio, sys
from swarm.bus import open_bus

async def main():
    bus = open_bus(sys.argv[1], client_id="doomed", presence=sys.argv[2])
    await bus.connect()
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_last_will_marks_a_killed_client_offline(mosquitto):
    presence = topics.presence("v", "doomed")
    async with open_bus(mosquitto.url) as watcher:
        sub = await watcher.subscribe(topics.presence("v", topics.ANY))
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, mosquitto.url, presence,
                                                     stdout=asyncio.subprocess.PIPE)
        try:
            assert await asyncio.wait_for(child.stdout.readline(), 20) == b"ready\n"
            online = await sub.get(timeout=5)
            assert (online.topic, online.payload) == (presence, {"client": "doomed", "status": "online"})
            child.kill()  # SIGKILL: no clean disconnect, so the broker publishes the will
            await child.wait()
            offline = await sub.get(timeout=5)
            assert (offline.topic, offline.payload) == (presence, {"client": "doomed", "status": "offline"})
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        late = await watcher.subscribe(presence)  # and it stays retained
        assert (await late.get(timeout=5)).payload["status"] == "offline"


async def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_messages_published_during_an_outage_arrive_after_reconnecting(mosquitto, caplog):
    async with open_bus(mosquitto.url, presence=topics.presence("v", "sim")) as bus:
        sub = await bus.subscribe("swarm/v/events", type=Event)
        await bus.publish("swarm/v/events", Event(0, "before"))
        assert (await sub.get(timeout=5)).payload.tick == 0

        mosquitto.stop()
        await wait_until(lambda: not bus.connected)
        for i in range(1, 4):
            await bus.publish("swarm/v/events", Event(i, "during the outage"))
        places = await bus.subscribe("swarm/v/places/+", type=Event)  # subscribed while disconnected
        assert bus.stats["buffered"] == 3
        mosquitto.start()

        assert [e.tick for e in await payloads(sub, 3)] == [1, 2, 3]
        async with open_bus(mosquitto.url) as other:  # the subscriptions are live at the new broker
            await other.publish("swarm/v/places/square", Event(4, "after"))
            await other.publish("swarm/v/events", Event(5, "after"))
            assert (await places.get(timeout=5)).payload.tick == 4
            assert (await sub.get(timeout=5)).payload.tick == 5
            presence = await other.subscribe(topics.presence("v", "sim"))  # re-announced to the new broker
            assert (await presence.get(timeout=5)).payload["status"] == "online"
        assert bus.stats["reconnects"] == 1 and bus.stats["buffered"] == 0
    assert "reconnecting" in caplog.text


async def test_a_broker_restart_loses_nothing_in_flight(mosquitto):
    async with open_bus(mosquitto.url) as bus:
        sub = await bus.subscribe("swarm/v/events", type=int)
        await bus.publish("swarm/v/events", 0)
        assert (await sub.get(timeout=5)).payload == 0
        mosquitto.restart()  # blocks the loop: the bus only notices when it next reads the dead socket
        for i in range(1, 51):
            await bus.publish("swarm/v/events", i)
        got = await payloads(sub, 50)
        # QoS 1 is at-least-once: a message the old broker took but never acknowledged may come twice.
        assert sorted(set(got)) == list(range(1, 51))
        assert got == sorted(got)
        assert bus.stats["reconnects"] == 1


async def test_an_unreachable_broker_is_a_bus_error_naming_it():
    port = free_port()  # nothing listens here
    bus = open_bus(f"mqtt://127.0.0.1:{port}", connect_timeout=1.0)
    assert isinstance(bus, MqttBus)
    start = time.monotonic()
    with pytest.raises(BusError, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}: .*refused"):
        await bus.connect()
    assert time.monotonic() - start < 3
    await bus.close()
