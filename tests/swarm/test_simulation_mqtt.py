"""A simulation on a real Mosquitto broker: any MQTT client reads its events as JSON and can talk to an
agent; bad payloads are dropped; an unreachable broker is a clear error."""

import asyncio
import subprocess
import sys

import aiomqtt
import msgspec
import pytest

from swarm.agents.actions import Say, Wait
from swarm.bus import BusError

from .conftest import free_port
from .test_simulation import RUMOUR, Recording, tavern


def plain_client(mosquitto) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5)


async def collect(client, until, timeout=5.0) -> list:
    got = []

    async def loop():
        async for m in client.messages:
            got.append(m)
            if until(got):
                return

    await asyncio.wait_for(loop(), timeout)
    return got


def taken(bus) -> int:
    return bus.stats["received"] + bus.stats["dropped"]


async def arrived(bus, before: int, n: int, timeout: float = 5.0) -> None:
    """Wait until the simulation's bus has taken in `n` more messages (kept or dropped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while taken(bus) < before + n:
        assert asyncio.get_running_loop().time() < deadline, "the inbox messages never arrived"
        await asyncio.sleep(0.01)


async def test_events_world_and_inbox_over_mqtt_json(mosquitto):
    model = Recording(lambda t: Say(text="welcome") if t.agent.id == "Mira" and t.request.kind == "act" else Wait())
    sim = tavern(model, bus=mosquitto.url + "?format=json", name="village")
    async with plain_client(mosquitto) as client:
        await client.subscribe("swarm/village/events")
        seen = [e for _ in range(2) for e in await sim.atick()]
        got = await collect(client, lambda g: len(g) == len(seen))
        assert [json.get("seq") for json in (msgspec.json.decode(m.payload) for m in got)] == [e.seq for e in seen]
        assert any(msgspec.json.decode(m.payload)["text"] == 'Mira says: "welcome"' for m in got)

        async with plain_client(mosquitto) as late:  # the retained snapshot reaches a client that joins later
            await late.subscribe("swarm/village/world")
            [snap] = await collect(late, lambda g: len(g) == 1)
            assert msgspec.json.decode(snap.payload)["places"]["square"] == ["Ann"]

        before = taken(sim.bus)
        await client.publish("swarm/village/agents/Ann/inbox", b'{"text": "the bridge is out", "sender": "player"}',
                             qos=1)
        await client.publish("swarm/village/agents/Ann/inbox", b'{"text": 5}', qos=1)  # malformed: dropped
        await client.publish("swarm/village/agents/Nobody/inbox", b'{"text": "hi"}', qos=1)  # unknown agent
        await arrived(sim.bus, before, 3)
        events = await sim.atick()
        [inbox] = [e for e in events if e.kind == "inbox"]
        assert inbox.target == "Ann" and inbox.actor == "player"
        assert sim.bus.stats["dropped"] >= 1
        await sim.atick()
        assert model.batches[-1] == [("Ann", "act")]
    await sim.aclose()


def test_unreachable_broker_is_a_clear_error():
    url = f"mqtt://127.0.0.1:{free_port()}"
    sim = tavern(Recording(lambda t: Wait()), bus=url)
    with pytest.raises(BusError, match="cannot reach the MQTT broker at 127.0.0.1"):
        sim.tick()
    out = subprocess.run([sys.executable, "-m", "swarm.cli", "run", RUMOUR, "--model", "scripted", "--ticks", "2",
                          "--bus", url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot reach the MQTT broker" in out.stderr
