"""`swarm watch mqtt://host:port --sim NAME` with Pilot, against a real broker: it follows a simulation
ticking elsewhere (tick counter, event log, roster), `p` pauses the display while ticks keep buffering,
an unreachable broker and an unknown simulation are a status in the header, `q` quits."""

import asyncio
import functools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from swarm.tui.watch import WatchApp, WatchSource
from swarm.tui.widgets import EventLog, Roster, SimHeader
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
            assert header.scenario == "tavern" and header.model == f"watching {mosquitto.url}"
            assert header.status == "running"
            assert '    2 say      Mira says: "round 2"' in said(app)
            assert app.query_one(Roster).get_cell("Ann", "place") == "square"

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
