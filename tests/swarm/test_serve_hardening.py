"""`swarm serve` against hostile requests: nested past any decoder's depth (an error reply, no traceback), and
reply topics that point into a simulation (an agent's inbox): no reply goes there, whatever the request says."""

import asyncio
import logging

import msgspec
import pytest

from swarm.bus import open_bus, topics
from swarm.runtime import Engine, EngineConfig
from swarm.serve import Server, generate_topic, info_topic, server_info_topic, server_status_topic, status_topic
from swarm.serve.protocol import MAX_DEPTH, check_reply_prefix, check_reply_topic

from .serving import ask
from .test_serve import folder  # noqa: F401 (the module's model folder, a fixture)


@pytest.fixture
async def bus():
    async with open_bus("local") as bus:
        yield bus


@pytest.fixture
def engine(folder):  # noqa: F811 (the fixture imported above)
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=2048))


def nested(depth: int) -> dict:
    schema = inner = {}
    for _ in range(depth):
        inner["items"] = inner = {}
    return schema


@pytest.mark.parametrize("payload, message", [
    (b"[" * 5000 + b"]" * 5000, "not valid JSON: the payload nests too deeply"),
    (b"\x81\xa6prompt" + b"\x91" * 5000 + b"\xc0", "not valid msgpack: the payload nests too deeply"),
    (msgspec.json.encode({"id": 1, "prompt": "x", "schema": nested(MAX_DEPTH)}), f"deeper than {MAX_DEPTH} levels"),
    (msgspec.json.encode({"id": 2, "prompt": "x", "stop": [[[[["x"]]]]] * 5000}), "invalid request"),
], ids=["json", "msgpack", "deep schema", "wrong types"])
async def test_deep_requests_get_an_error_reply_and_no_traceback(bus, engine, payload, message, caplog):
    async with Server(engine, bus, "v"):
        with caplog.at_level(logging.DEBUG):
            [error] = await ask(bus, "v", payload, format="msgpack" if payload[:1] == b"\x81" else "json", timeout=5)
        assert error["code"] == "bad_request" and message in error["error"], error
        assert not [r for r in caplog.records if r.exc_info]
        assert (await ask(bus, "v", {"prompt": "x", "max_tokens": 2}))[-1]["done"]


async def test_a_schema_just_within_the_depth_limit_is_served(bus, engine):
    async with Server(engine, bus, "v"):
        schema = {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}, "maxItems": 1}
        deep = {"type": "object", "properties": {"a": schema}, "required": ["a"], "$defs": nested(MAX_DEPTH - 3)}
        done = (await ask(bus, "v", {"prompt": "x", "schema": deep, "max_tokens": 30}))[-1]
        assert "code" not in done or done["code"] != "bad_request", done


INBOX = topics.inbox("village", "Mira")


@pytest.mark.parametrize("reply_to", [INBOX, "swarm/village/events", "swarm", "$SYS/broker/x"])
@pytest.mark.parametrize("v5", [True, False], ids=["response topic", "reply_to"])
async def test_no_reply_goes_into_a_simulations_topics(bus, engine, reply_to, v5, caplog):
    async with Server(engine, bus, "v") as server:
        watch = await bus.subscribe(reply_to, type=bytes)
        request = {"id": "x", "prompt": "Mira, the bridge is out", "max_tokens": 4}
        with caplog.at_level(logging.WARNING, logger="swarm.serve"):
            if v5:
                await bus.publish(generate_topic("v"), msgspec.json.encode(request), reply_to=reply_to,
                                  correlation=b"c")
            else:
                await bus.publish(generate_topic("v"), msgspec.json.encode({**request, "reply_to": reply_to}))
            assert (await ask(bus, "v", {"prompt": "x", "max_tokens": 2}))[-1]["done"]  # the next one is served
        assert watch.drain() == []
        assert server.dropped.count == 1 and server.pending == 0
        assert f"its reply topic {reply_to!r} is under swarm/ or a $ topic" in caplog.text


async def test_a_reply_prefix_confines_replies_to_its_topics(bus, engine):
    async with Server(engine, bus, "v", reply_prefix="game/replies/") as server:
        assert server.reply_prefix == "game/replies"
        sub = await bus.subscribe("#", type=bytes)
        for n, topic in enumerate(["game/replies", "game/replies/7", "game/repliesX", "client/1", INBOX]):
            await bus.publish(generate_topic("v"), msgspec.json.encode({"id": n, "prompt": "x", "max_tokens": 1}),
                              reply_to=topic)
        answered, seen = set(), set()
        while len(answered) < 2:
            msg = await sub.get(timeout=10)
            seen.add(msg.topic)
            if not msg.topic.startswith("swarm/") and msgspec.json.decode(msg.payload)["done"]:
                answered.add(msg.topic)
        await asyncio.sleep(0.1)  # anything for the other three would have come by now
        seen |= {m.topic for m in sub.drain()}
        assert answered == {"game/replies", "game/replies/7"}
        retained = {info_topic("v"), status_topic("v"), server_info_topic("v", server.id),
                    server_status_topic("v", server.id)}  # what the server announces, not replies
        assert seen == {generate_topic("v"), *retained, "game/replies", "game/replies/7"}
        assert server.dropped.count == 3


def test_reply_topics_and_prefixes_are_checked():
    assert check_reply_topic("game/1") == "game/1" and check_reply_topic("a/swarm/b") == "a/swarm/b"
    assert check_reply_topic("game/replies/1", "game/replies") == "game/replies/1"
    for topic, prefix, why in [(None, None, "names no valid reply topic"), ("a/+", None, "wildcards"),
                               ("swarm/x", None, "under swarm/"), ("swarm/x", "swarm", "under swarm/"),
                               ("game/1", "client", "not under this server's reply prefix 'client'")]:
        with pytest.raises(ValueError, match=why):
            check_reply_topic(topic, prefix)
    for prefix, why in [("swarm", "under swarm/"), ("swarm/village/agents", "under swarm/"), ("$SYS", "\\$ topic"),
                        ("game/+", "not a topic prefix"), ("/", "not a topic prefix")]:
        with pytest.raises(ValueError, match=why):
            check_reply_prefix(prefix)


@pytest.mark.parametrize("argv, message", [
    (["--reply-prefix", "swarm/village"], "--reply-prefix 'swarm/village' is under swarm/"),
    (["--session-expiry", "-1"], "--session-expiry is seconds >= 0"),
])
def test_swarm_serve_refuses_a_bad_reply_prefix_before_loading_anything(argv, message, capsys):
    from swarm.cli import main

    assert main(["serve", "--bus", "mqtt://127.0.0.1:1", *argv]) == 2
    assert message in capsys.readouterr().err
