"""Persistent MQTT sessions: what is published while a client's link is down reaches it once it is back, so
requests sent while `swarm serve` reconnects are all answered. The broker stays up; only the link drops."""

import asyncio
import time

import pytest

from swarm.bus import open_bus
from swarm.runtime import Engine, EngineConfig
from swarm.serve import Server
from swarm.serve.command import server_bus
from swarm.serve.protocol import default_server_id

from .link import Link
from .serving import ask
from .test_serve import folder  # noqa: F401 (the module's model folder, a fixture)

TOPIC = "swarm/v/runtime/generate"


async def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_persistent_session_gets_what_was_published_while_its_link_was_down(mosquitto):
    async with Link(mosquitto.port) as link, open_bus(mosquitto.url) as publisher:
        async with open_bus(link.url, client_id="steady", session_expiry=60) as bus:
            sub = await bus.subscribe(TOPIC, type=int)
            await publisher.publish(TOPIC, 0)
            assert (await sub.get(timeout=5)).payload == 0
            link.cut()
            await wait_until(lambda: not bus.connected)
            for i in range(1, 21):
                await publisher.publish(TOPIC, i)
            assert await publisher.flush(5)  # the broker holds them all now
            link.restore()
            got = [(await sub.get(timeout=10)).payload for _ in range(20)]
            # QoS 1 is at-least-once: one the broker was sending as the link went may come twice
            assert sorted(set(got)) == list(range(1, 21)) and got == sorted(got)
            await wait_until(lambda: bus.stats["reconnects"] == 1)
            assert link.connections == 2


@pytest.fixture
def engine(folder):  # noqa: F811 (the fixture imported above)
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=2048))


async def test_requests_sent_while_swarm_serve_reconnects_are_all_answered(mosquitto, engine):
    async with Link(mosquitto.port) as link, open_bus(mosquitto.url) as client:
        async with server_bus(link.url, "v") as bus, Server(engine, bus, "v"):
            assert bus.client_id == f"swarm-serve-v-{default_server_id()}"  # its own session, whatever its peers
            assert (await ask(client, "v", {"prompt": "x", "max_tokens": 2}))[-1]["done"]
            link.cut()
            await wait_until(lambda: not bus.connected)
            asks = [asyncio.ensure_future(ask(client, "v", {"id": i, "prompt": "x", "max_tokens": 2}, timeout=20))
                    for i in range(5)]
            await asyncio.sleep(0.3)  # all five published while the server is away
            assert not bus.connected
            link.restore()
            finals = [replies[-1] for replies in await asyncio.gather(*asks)]
            assert [(r["id"], r["done"], "error" in r) for r in finals] == [(i, True, False) for i in range(5)]
