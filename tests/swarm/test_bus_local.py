"""LocalBus semantics (the same as over MQTT, without a broker), topic rules, and `open_bus`."""

import asyncio
import logging

import msgspec
import pytest

from swarm.bus import BusError, LocalBus, Message, MqttBus, open_bus, topics


class Event(msgspec.Struct):
    tick: int
    text: str


class Ping(msgspec.Struct):
    n: int


class Pong(msgspec.Struct):
    n: int
    by: str


@pytest.fixture
async def bus():
    bus = open_bus("local")
    await bus.connect()
    yield bus
    await bus.close()


# Topics.

@pytest.mark.parametrize("pattern, topic, expected", [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a", False),
    ("a/+", "a/", True),  # '+' matches an empty level
    ("+/+", "/x", True),
    ("a/#", "a", True),  # '#' includes the parent level
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),
    ("#", "a/b", True),
    ("+/b/#", "a/b", True),
    ("a/+/c", "a/b/d", False),
    ("#", "$SYS/broker", False),  # leading wildcards never match $-topics
    ("+/broker", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
    ("a/b", "a/b/", False),
])
def test_matches_follows_mqtt_rules(pattern, topic, expected):
    assert topics.matches(pattern, topic) is expected


@pytest.mark.parametrize("pattern", ["", "a/#/b", "a/b#", "a+/b", "a/++", "a\0b"])
def test_invalid_patterns_raise(pattern):
    with pytest.raises(ValueError):
        topics.validate_pattern(pattern)


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "#", "a\0"])
def test_invalid_publish_topics_raise(topic):
    with pytest.raises(ValueError):
        topics.validate_topic(topic)


@pytest.mark.parametrize("name", ["Mira", "Old Tom", "a/b", "+", "#", "50%", "%2F", "x+y#z/w", "Zoë 🍺", "\0"])
def test_names_escape_into_one_level_and_back(name):
    level = topics.escape(name)
    assert not set("/+#\0") & set(level)
    assert topics.unescape(level) == name
    topic = topics.inbox("village", name)
    assert topics.validate_topic(topic) == topic
    assert topics.levels(topic) == ["swarm", "village", "agents", name, "inbox"]


def test_topic_helpers_and_wildcards():
    assert topics.inbox("v", "Mira") == "swarm/v/agents/Mira/inbox"
    assert topics.place("v", "the square") == "swarm/v/places/the square"
    assert topics.events("v") == "swarm/v/events"
    assert topics.world("v") == "swarm/v/world"
    assert topics.presence("v", "sim/1") == "swarm/v/presence/sim%2F1"
    assert topics.runtime("v", "workers", "w+1") == "swarm/v/runtime/workers/w%2B1"
    assert topics.inbox("v", topics.ANY) == "swarm/v/agents/+/inbox"
    assert topics.everything("v") == "swarm/v/#"
    assert topics.matches(topics.inbox("v", topics.ANY), topics.inbox("v", "a/b"))
    with pytest.raises(ValueError):
        topics.inbox("v", "")


# Publish and subscribe.

async def test_wildcard_subscriptions_get_their_own_decoded_copies(bus):
    inboxes = await bus.subscribe(topics.inbox("v", topics.ANY), type=Event)
    everything = await bus.subscribe("swarm/v/#")
    other = await bus.subscribe("swarm/other/#")
    await bus.publish(topics.inbox("v", "Mira"), Event(1, "hello"))
    await bus.publish(topics.events("v"), {"kind": "tick", "tick": 1})

    got = inboxes.drain()
    assert got == [Message(topics.inbox("v", "Mira"), Event(1, "hello"), retain=False)]
    plain = everything.drain()
    assert [m.payload for m in plain] == [{"tick": 1, "text": "hello"}, {"kind": "tick", "tick": 1}]
    assert other.drain() == []
    assert bus.stats == {"published": 2, "received": 3, "dropped": 0}


async def test_each_subscriber_gets_a_copy_not_the_publishers_object(bus):
    a = await bus.subscribe("t/x")
    b = await bus.subscribe("t/x")
    sent = {"items": [1, 2]}
    await bus.publish("t/x", sent)
    got_a, got_b = (await a.get(timeout=1)).payload, (await b.get(timeout=1)).payload
    got_a["items"].append(3)
    assert got_b == sent == {"items": [1, 2]}
    assert got_a is not sent


async def test_order_is_kept_and_get_waits_for_the_next_message(bus):
    sub = await bus.subscribe("t/#", type=int)

    async def later():
        await asyncio.sleep(0.01)
        for i in range(5):
            await bus.publish("t/n", i)

    task = asyncio.create_task(later())
    assert (await sub.get(timeout=2)).payload == 0
    await task
    assert [m.payload for m in sub.drain()] == [1, 2, 3, 4]
    with pytest.raises(asyncio.TimeoutError):
        await sub.get(timeout=0.02)


async def test_async_iteration_ends_when_the_subscription_closes(bus):
    sub = await bus.subscribe("t/x", type=int)
    for i in range(3):
        await bus.publish("t/x", i)
    await sub.close()
    await bus.publish("t/x", 99)  # after close: not delivered
    assert [m.payload async for m in sub] == [0, 1, 2]
    with pytest.raises(BusError, match="closed"):
        await sub.get()


async def test_closing_the_bus_wakes_a_waiting_reader(bus):
    sub = await bus.subscribe("t/x")
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    await bus.close()
    with pytest.raises(BusError):
        await asyncio.wait_for(reader, 1)
    with pytest.raises(BusError, match="closed"):
        await bus.publish("t/x", 1)


async def test_raw_bytes_are_sent_as_they_are(bus):
    raw = await bus.subscribe("t/raw", type=bytes)
    await bus.publish("t/raw", b"\x00\x01not msgpack")
    assert raw.drain()[0].payload == b"\x00\x01not msgpack"


async def test_publish_checks_topic_qos_and_encoding(bus):
    with pytest.raises(ValueError):
        await bus.publish("swarm/+/events", 1)
    with pytest.raises(ValueError):
        await bus.publish("t/x", 1, qos=3)
    with pytest.raises(BusError, match="cannot encode"):
        await bus.publish("t/x", object())


# Retained messages.

async def test_retained_message_reaches_late_subscribers_and_empty_payload_clears_it(bus):
    early = await bus.subscribe(topics.world("v"), type=Event)
    await bus.publish(topics.world("v"), Event(1, "old"), retain=True)
    await bus.publish(topics.world("v"), Event(2, "snapshot"), retain=True)
    assert [(m.payload.tick, m.retain) for m in early.drain()] == [(1, False), (2, False)]  # live: retain False

    late = await bus.subscribe("swarm/v/#", type=Event)
    assert late.drain() == [Message(topics.world("v"), Event(2, "snapshot"), retain=True)]

    await bus.publish(topics.world("v"), b"", retain=True)
    assert early.drain() == [] and late.drain() == []  # the clearing message decodes to nothing: skipped quietly
    assert bus.stats["dropped"] == 0
    later = await bus.subscribe(topics.world("v"), type=Event)
    assert later.drain() == []


async def test_presence_is_retained_online_then_offline():
    bus = open_bus(None, client_id="sim", presence=topics.presence("v", "sim"))
    await bus.connect()
    watcher = await bus.subscribe(topics.presence("v", topics.ANY))
    await bus.close()
    assert [(m.payload["status"], m.retain) for m in watcher.drain()] == [("online", True), ("offline", False)]


# Bad input and limits.

async def test_malformed_payloads_are_logged_and_dropped_and_the_next_one_arrives(bus, caplog):
    sub = await bus.subscribe("swarm/v/events", type=Event)
    with caplog.at_level(logging.WARNING, logger="swarm.bus"):
        await bus.publish("swarm/v/events", b"\xc1 not msgpack")
        await bus.publish("swarm/v/events", {"tick": "one", "text": "wrong type"})
        await bus.publish("swarm/v/events", Event(3, "good"))
    assert [m.payload for m in sub.drain()] == [Event(3, "good")]
    assert bus.stats["dropped"] == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("swarm/v/events" in w and "Event" in w for w in warnings)


async def test_oversized_payload_is_refused_on_publish():
    bus = LocalBus(max_payload=100)
    sub = await bus.subscribe("t/x", type=bytes)
    with pytest.raises(BusError, match="over max_payload=100"):
        await bus.publish("t/x", b"x" * 101)
    await bus.publish("t/x", b"x" * 100)
    assert [len(m.payload) for m in sub.drain()] == [100]


async def test_a_full_queue_drops_its_oldest_messages(bus, caplog):
    sub = await bus.subscribe("t/x", type=int, max_queue=3)
    with caplog.at_level(logging.WARNING, logger="swarm.bus"):
        for i in range(5):
            await bus.publish("t/x", i)
    assert [m.payload for m in sub.drain()] == [2, 3, 4]
    assert bus.stats["dropped"] == 2
    assert "full" in caplog.text


def test_publish_nowait_from_plain_code():
    bus = LocalBus()

    async def subscribe():
        return await bus.subscribe("t/x", type=int)

    sub = asyncio.run(subscribe())
    bus.publish_nowait("t/x", 7)
    assert [m.payload for m in sub.drain()] == [7]


# Request/reply.

async def test_request_reply_with_concurrent_requests(bus):
    async def handler(msg):
        await asyncio.sleep(0.01 * (msg.payload.n % 3))  # replies come back out of order
        return Pong(msg.payload.n * 2, by="server")

    service = await bus.serve(topics.runtime("v", "double"), handler, type=Ping)
    replies = await asyncio.gather(*(bus.request(topics.runtime("v", "double"), Ping(i), type=Pong)
                                     for i in range(10)))
    assert [r.n for r in replies] == [2 * i for i in range(10)]
    await service.close()
    with pytest.raises(asyncio.TimeoutError, match="no reply"):
        await bus.request(topics.runtime("v", "double"), Ping(1), type=Pong, timeout=0.05)


async def test_publish_carries_reply_to_and_correlation(bus):
    # a streamed reply: many messages for one request, each with the request's correlation
    sub = await bus.subscribe("swarm/v/replies")
    await bus.publish("swarm/v/replies", {"n": 1}, reply_to="swarm/v/back", correlation=b"\x01id")
    bus.publish_nowait("swarm/v/replies", {"n": 2}, correlation=b"\x01id")
    await bus.publish("swarm/v/replies", {"n": 3})
    got = [await sub.get(timeout=1) for _ in range(3)]
    assert [(m.payload["n"], m.reply_to, m.correlation) for m in got] == [
        (1, "swarm/v/back", b"\x01id"), (2, None, b"\x01id"), (3, None, None)]


async def test_request_without_server_times_out(bus):
    with pytest.raises(asyncio.TimeoutError):
        await bus.request("swarm/v/runtime/nobody", Ping(1), timeout=0.05)


async def test_a_failing_handler_does_not_stop_the_service(bus, caplog):
    async def handler(msg):
        if msg.payload.n == 0:
            raise RuntimeError("boom")
        return None if msg.payload.n == 1 else Pong(msg.payload.n, by="s")

    await bus.serve("swarm/v/runtime/flaky", handler, type=Ping)
    with caplog.at_level(logging.ERROR, logger="swarm.bus"):
        with pytest.raises(asyncio.TimeoutError):
            await bus.request("swarm/v/runtime/flaky", Ping(0), timeout=0.05)
    assert "boom" in caplog.text
    with pytest.raises(asyncio.TimeoutError):  # None: no reply
        await bus.request("swarm/v/runtime/flaky", Ping(1), timeout=0.05)
    assert await bus.request("swarm/v/runtime/flaky", Ping(2), type=Pong) == Pong(2, by="s")


async def test_a_reply_of_the_wrong_type_is_a_bus_error(bus):
    await bus.serve("swarm/v/runtime/odd", lambda msg: "not a pong")  # a plain function serves too
    with pytest.raises(BusError, match="Pong"):
        await bus.request("swarm/v/runtime/odd", Ping(1), type=Pong)


async def test_closing_the_bus_fails_waiting_requests(bus):
    waiting = asyncio.create_task(bus.request("swarm/v/runtime/slow", Ping(1), timeout=5))
    await asyncio.sleep(0.01)
    await bus.close()
    with pytest.raises(BusError, match="closed"):
        await waiting


# open_bus.

def test_open_bus_picks_the_backend_from_the_url():
    assert isinstance(open_bus(None), LocalBus)
    assert open_bus("local?format=json").format == "json"
    mqtt = open_bus("mqtt://10.0.0.5:1884?format=json", client_id="x", presence="swarm/v/presence/x")
    assert isinstance(mqtt, MqttBus)
    assert (mqtt.host, mqtt.port, mqtt.format, mqtt.client_id) == ("10.0.0.5", 1884, "json", "x")
    assert open_bus("mqtt://broker").port == 1883
    assert isinstance(open_bus("local", connect_timeout=1), LocalBus)  # transport options are portable
    with pytest.raises(ValueError, match="unknown bus"):
        open_bus("amqp://host")
    with pytest.raises(ValueError, match="qos"):
        open_bus("mqtt://host?qos=2")
    with pytest.raises(ValueError, match="format"):
        open_bus("local?format=xml")
