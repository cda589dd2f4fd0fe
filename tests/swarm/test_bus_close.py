"""Closing an MQTT bus loses nothing silently: `close()` waits (up to `close_timeout`) for a broker that is
down to come back and delivers what it buffered, or fails saying how many messages never got out; `swarm run`
exits non-zero then. A script that never calls `sim.close()` still delivers its events, without tracebacks."""

import asyncio
import gc
import re
import subprocess
import sys
import threading
import time

import aiomqtt
import msgspec
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from swarm.agents.actions import Say
from swarm.bus import BusError, open_bus, topics
from swarm.bus.broker import Mosquitto, find_mosquitto

from .test_simulation import RUMOUR, Recording, tavern

WATCHER = "watcher"


@pytest.fixture
def persistent(tmp_path):
    """A broker that keeps sessions (and what is queued for them) across a restart."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    broker = Mosquitto(tmp_path, max_queued_messages=None, persistence=True).start()
    yield broker
    broker.stop()


def watcher(broker) -> aiomqtt.Client:
    """A QoS 1 subscriber with a persistent session, as a recorder elsewhere would be."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    return aiomqtt.Client("127.0.0.1", broker.port, identifier=WATCHER, protocol=aiomqtt.ProtocolVersion.V5,
                          clean_start=False, properties=props)


async def subscribe(broker, topic: str) -> None:
    async with watcher(broker) as client:
        await client.subscribe(topic, qos=1)


async def received(broker, n: int, timeout: float = 20) -> list[bytes]:
    """The next `n` messages the watcher's session holds (or gets), as payloads."""
    got = []
    async with watcher(broker) as client:
        async def read():
            async for m in client.messages:
                got.append(m.payload)
                if len(got) == n:
                    return

        await asyncio.wait_for(read(), timeout)
    return got


def start_later(broker, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), broker.start()))
    thread.start()
    return thread


async def test_close_waits_for_the_broker_to_come_back_and_delivers_everything(persistent, caplog):
    await subscribe(persistent, "swarm/v/events")
    bus = open_bus(persistent.url, close_timeout=20)
    await bus.connect()
    persistent.stop()
    for i in range(500):
        await bus.publish("swarm/v/events", i)
    restart, t0 = start_later(persistent, 1.0), time.monotonic()
    await bus.close()  # no error: everything reached the broker
    restart.join()
    assert 1.0 < time.monotonic() - t0 < 10
    assert "waiting up to 19 s more for the MQTT broker" in caplog.text
    assert "to take the 500 messages not delivered yet (it is away: reconnecting)" in caplog.text
    assert [msgspec.msgpack.decode(p) for p in await received(persistent, 500)] == list(range(500))


async def test_close_without_the_broker_fails_counting_what_was_never_delivered(mosquitto):
    bus = open_bus(mosquitto.url, close_timeout=0.5)
    await bus.connect()
    mosquitto.stop()
    for i in range(7):
        await bus.publish("swarm/v/events", i)
    t0 = time.monotonic()
    with pytest.raises(BusError, match=f"7 messages published on the bus to 127.0.0.1:{mosquitto.port} were never "
                                       "delivered: 7 were still buffered .* close_timeout=0.5 s"):
        await bus.close()
    assert time.monotonic() - t0 < 3 and bus.closed


def test_a_run_that_ends_while_the_broker_is_down_delivers_every_event_when_it_is_back(persistent):
    asyncio.run(subscribe(persistent, topics.events("village")))
    sim = tavern(Recording(lambda t: Say(text=f"tick {t.agent.id}")), bus=persistent.url, name="village")
    seqs = [e.seq for _ in range(3) for e in sim.tick()]
    persistent.stop()
    seqs += [e.seq for _ in range(3) for e in sim.tick()]  # these wait in the bus's outbox
    restart = start_later(persistent, 1.0)
    sim.close()
    restart.join()
    got = asyncio.run(received(persistent, len(seqs)))
    assert [msgspec.msgpack.decode(p)["seq"] for p in got] == seqs


def test_swarm_run_exits_non_zero_naming_the_events_it_could_not_deliver(mosquitto, monkeypatch, capsys):
    from swarm.cli import main
    from swarm.simulation import Simulation

    close = Simulation.close

    def broker_gone_at_the_end(sim):
        mosquitto.stop()
        sim.inject("Mira", "the last word")  # published while the broker is down
        sim.bus.close_timeout = 0.5
        close(sim)

    monkeypatch.setattr(Simulation, "close", broker_gone_at_the_end)
    code = main(["run", RUMOUR, "--model", "scripted", "--ticks", "3", "--bus", mosquitto.url, "--headless"])
    out = capsys.readouterr()
    assert code == 2, out.err
    assert re.search(r"swarm: error: \d+ messages published on the bus to .* were never delivered", out.err), out.err
    assert "ticks" in out.out  # the report still comes


SCRIPT = """
import sys
from swarm import Simulation

sim = Simulation.from_scenario("village", model="scripted", bus=sys.argv[1], seed=1)
sim.run(ticks=int(sys.argv[2]))
print(sim.counters["events"])
# no sim.close(): as in the README's first example
"""


async def test_a_script_that_never_closes_its_simulation_delivers_everything_quietly(mosquitto, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(topics.events("village"), qos=1)
        proc = await asyncio.create_subprocess_exec(sys.executable, str(script), mosquitto.url, "20",
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        for noise in ("Traceback", "Task was destroyed", "Event loop is closed", "never acknowledged"):
            assert noise not in err.decode(), err.decode()
        events = int(out)
        got = []

        async def read():
            async for m in client.messages:
                got.append(msgspec.msgpack.decode(m.payload)["seq"])
                if len(got) == events:
                    return

        await asyncio.wait_for(read(), 20)
    assert events > 50 and len(got) == events and got == sorted(set(got))


def test_a_simulation_dropped_without_close_closes_its_bus(mosquitto):
    sim = tavern(Recording(lambda t: Say(text="hi")), bus=mosquitto.url, name="village")
    sim.tick()
    bus, loop = sim.bus, sim._loop
    del sim
    deadline = time.monotonic() + 5
    while not loop.is_closed():  # (the model's worker thread may hold the tick's turns, and so sim, a moment more)
        assert time.monotonic() < deadline, "the simulation was never collected, or its bus never closed"
        gc.collect()
        time.sleep(0.01)
    assert bus.closed and bus.stats["buffered"] == 0
