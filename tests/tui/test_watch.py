"""`swarm watch mqtt://host:port --sim NAME` with Pilot, against a real broker: it follows a simulation
ticking elsewhere (tick counter, event log, roster), `p` pauses the display while ticks keep buffering,
an unreachable broker, one lost mid-run (it reconnects), an unknown simulation (the header names those
there are) and one that stopped are a status in the header; the detail and the world come from what
the bus carries; `q` quits."""

import asyncio
import contextlib
import functools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarm.bus.broker import Mosquitto, find_mosquitto
from swarm.tui.watch import WatchApp, WatchSource
from swarm.tui.widgets import AgentDetailPane, EventLog, MetricsPanel, Roster, SimHeader, WorldView
from tests.swarm.conftest import free_port
from tests.tui.test_app import tavern, until

ROOT = Path(__file__).resolve().parents[2]


def step(sim) -> None:
    """One tick; the synchronous API runs the bus's loop only inside its calls: let it send the tick's messages."""
    sim.tick()
    sim._loop.run_until_complete(sim.bus.flush(5))


def make_app(url, sim="tavern", **options) -> WatchApp:
    return WatchApp(WatchSource(url, sim, **options), refresh_s=0.05)


def said(app) -> list[str]:
    return [line for line in app.query_one(EventLog).shown if " say " in line]


async def test_follows_a_simulation_and_p_pauses_the_display(mosquitto):
    app = make_app(mosquitto.url, quiet_s=0.2)
    worker = ThreadPoolExecutor(1)  # the simulation lives in a thread of its own, as if elsewhere
    loop = asyncio.get_running_loop()
    sim = await loop.run_in_executor(worker, functools.partial(tavern, bus=mosquitto.url))
    try:
        async with app.run_test() as pilot:
            header = app.query_one(SimHeader)
            await until(pilot, lambda: header.status == "waiting for tavern")
            for _ in range(3):
                await loop.run_in_executor(worker, step, sim)
            await until(pilot, lambda: header.tick == 3 and len(said(app)) == 6)
            assert header.scenario == "tavern" and header.model == f"scripted-test, watched at {mosquitto.url}"
            assert header.status == "running"
            assert '    2 say      Mira says: "round 2"' in said(app)
            assert app.query_one(Roster).get_cell("Ann", "place") == "square"
            # the simulation's report comes over the bus too: its metrics, as the simulation counts them
            metrics = app.query_one(MetricsPanel)
            await until(pilot, lambda: metrics.metrics.get("turns", 0) > 0)
            assert metrics.metrics["agents"] == 3

            await pilot.press("p")
            assert header.status == "paused"
            for _ in range(2):
                await loop.run_in_executor(worker, step, sim)
            await until(pilot, lambda: len(app.source.ready) >= 2)  # buffered, not shown
            await pilot.pause(0.3)
            assert header.tick == 3 and len(said(app)) == 6

            await pilot.press("p")
            await until(pilot, lambda: header.tick == 5 and len(said(app)) == 10)
            assert header.status == "running"
            await pilot.press("q")
            await pilot.pause(0.1)
            assert not app.is_running
        assert app.control.done.wait(5)
    finally:
        await loop.run_in_executor(worker, sim.close)
        worker.shutdown()


async def test_unreachable_broker_is_a_status_and_q_quits():
    url = f"mqtt://127.0.0.1:{free_port()}"
    app = make_app(url, connect_timeout=0.3, retry_s=0.3)
    async with app.run_test() as pilot:
        header = app.query_one(SimHeader)
        await until(pilot, lambda: "cannot reach the MQTT broker at 127.0.0.1" in header.status)
        assert "retrying" in header.status
        await until(pilot, lambda: header.status.startswith("connecting"))  # it tries again
        await pilot.press("q")
        await pilot.pause(0.1)
        assert not app.is_running
    assert app.control.done.wait(5)
    assert app.source.error is None


async def test_an_unknown_simulation_is_a_status(mosquitto):
    app = make_app(mosquitto.url, sim="nowhere", missing_s=0.5)
    async with app.run_test() as pilot:
        header = app.query_one(SimHeader)
        await until(pilot, lambda: header.status == "no simulation named nowhere on this broker (yet)")
        assert header.tick == 0 and app.query_one(EventLog).shown == []
        await pilot.press("q")
    assert app.control.done.wait(5)


def test_cli_with_a_url_that_is_not_mqtt_exits_2():
    r = subprocess.run([sys.executable, "-m", "swarm.cli", "watch", "local", "--sim", "tavern"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "expected mqtt://host:port" in r.stderr and r.stdout == ""


async def test_a_broker_lost_mid_run_is_a_status_and_the_watch_goes_on_after_it_is_back(tmp_path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    broker = Mosquitto(tmp_path).start()  # our own, to stop and start again on the same port
    app = make_app(broker.url, quiet_s=0.2)
    worker = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    sim = await loop.run_in_executor(worker, functools.partial(tavern, bus=broker.url))
    try:
        async with app.run_test() as pilot:
            header = app.query_one(SimHeader)
            # tick until the watch has it (its subscription may come after the first tick's messages)
            for _ in range(3):
                await loop.run_in_executor(worker, step, sim)
                with contextlib.suppress(AssertionError):
                    await until(pilot, lambda: header.tick >= 1 and header.status == "running", timeout=3)
                    break
            ticks = header.tick
            assert ticks >= 1 and header.status == "running"
            await loop.run_in_executor(worker, broker.stop)
            lost = f"lost the MQTT broker at 127.0.0.1:{broker.port}; reconnecting"
            await until(pilot, lambda: header.status == lost)
            await loop.run_in_executor(worker, broker.start)
            # both buses reconnect by themselves (the simulation's as soon as it ticks: its loop runs only then,
            # so it may take a few ticks to be back); the watch then follows the ticks after the outage
            for _ in range(10):
                await loop.run_in_executor(worker, step, sim)
                with contextlib.suppress(AssertionError):
                    await until(pilot, lambda: header.tick > ticks + 1 and header.status == "running", timeout=2)
                    break
            assert header.tick > ticks + 1 and header.status == "running"
            assert said(app)
            await pilot.press("q")
        assert app.control.done.wait(5) and app.source.error is None
    finally:
        await loop.run_in_executor(worker, sim.close)
        worker.shutdown()
        broker.close()


async def test_an_unknown_simulation_names_those_on_the_broker_and_a_stopped_one_says_so(mosquitto):
    worker = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    sim = await loop.run_in_executor(worker, functools.partial(tavern, bus=mosquitto.url))
    await loop.run_in_executor(worker, step, sim)
    wrong = make_app(mosquitto.url, sim="taverm", missing_s=0.3)
    async with wrong.run_test() as pilot:
        header = wrong.query_one(SimHeader)
        await until(pilot, lambda: header.status == "no simulation named taverm on this broker (yet); on it: tavern")
        await pilot.press("q")
    right = make_app(mosquitto.url)
    try:
        async with right.run_test() as pilot:
            header = right.query_one(SimHeader)
            await until(pilot, lambda: header.status == "running")  # joined late: the retained snapshot
            view = right.query_one(WorldView)
            await until(pilot, lambda: view.world is not None)
            assert view.world["places"] == {"tavern": ["Mira", "Bob"], "square": ["Ann"]}
            await loop.run_in_executor(worker, sim.close)  # the simulation ends: its presence goes offline
            await until(pilot, lambda: header.status == "tavern has stopped; its last state is shown")
            await pilot.press("q")
    finally:
        worker.shutdown()


async def test_the_detail_and_world_of_a_watched_simulation(mosquitto):
    app = make_app(mosquitto.url, quiet_s=0.2)
    worker = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    sim = await loop.run_in_executor(worker, functools.partial(tavern, bus=mosquitto.url))
    try:
        async with app.run_test() as pilot:
            header = app.query_one(SimHeader)
            await until(pilot, lambda: header.status == "waiting for tavern")
            for _ in range(2):
                await loop.run_in_executor(worker, step, sim)
            await until(pilot, lambda: header.tick == 2)
            pane = app.query_one(AgentDetailPane)
            await until(pilot, lambda: pane.detail is not None and pane.detail.name == "Mira")
            assert pane.detail.persona == {"role": "innkeeper", "traits": "gossips"}
            assert pane.detail.action == 'Mira says: "round 1"'
            await pilot.press("down")  # Bob: fresh detail at once, without waiting for a tick
            await until(pilot, lambda: pane.detail.name == "Bob")
            assert pane.detail.persona == {"role": "smith"} and header.tick == 2
            assert app.query_one(WorldView).world["places"]["square"] == ["Ann"]
            await pilot.press("q")
    finally:
        await loop.run_in_executor(worker, sim.close)
        worker.shutdown()
