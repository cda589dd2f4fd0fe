"""`swarm replay FILE --tui`: a recorded run played back with Pilot: it plays, pauses, steps,
seeks back and forth, jumps to a tick, quits; a bad file fails before the app starts. The selected
agent's detail and the world come from the log, also from logs written before they were recorded."""

import subprocess
import sys
from pathlib import Path

import pytest

from swarm.recorder import read_log
from swarm.tui.app import SwarmApp
from swarm.tui.replay import ReplayControl, ReplaySource
from swarm.tui.widgets import AgentDetailPane, EventLog, Roster, SimHeader, WorldView
from tests.tui.test_app import tavern, until

ROOT = Path(__file__).resolve().parents[2]
TICKS = 6


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "run.jsonl"
    sim = tavern(record=path)
    sim.run(ticks=TICKS)
    sim.close()
    return path


def make_app(log, *, paused=True, delay=0.0) -> SwarmApp:
    return SwarmApp(ReplaySource(log, ReplayControl(delay=delay)), refresh_s=0.05, paused=paused)


def lines_up_to(log, tick):
    """The event log's lines for the events of the first `tick` ticks."""
    _, events = read_log(log)
    return [f"{e.tick:>5} {e.kind:<8} {e.text}" for e in events if e.tick < tick]


async def at(pilot, app, tick):
    """Wait until the views show position `tick`."""
    await until(pilot, lambda: app.query_one(SimHeader).tick == tick and not app._dirty)
    await pilot.pause(0.05)


async def test_plays_then_p_pauses(log):
    app = make_app(log, paused=False, delay=0.05)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.query_one(SimHeader).tick >= 2)
        await pilot.press("p")
        await until(pilot, app.control.idle.is_set)
        await pilot.pause(0.2)
        stopped = app.query_one(SimHeader).tick
        await pilot.pause(0.3)
        assert app.query_one(SimHeader).tick == stopped
        assert app.control.paused
        header = app.query_one(SimHeader)
        assert "tavern replay of 6 ticks" in header.scenario
        assert header.clock == f"day 1, 08:{stopped:02d}"
        await pilot.press("q")


async def test_right_and_left_seek_and_the_log_shows_exactly_the_events_so_far(log):
    app = make_app(log)
    async with app.run_test() as pilot:
        await at(pilot, app, 0)
        await pilot.press("right", "right", "right")
        await at(pilot, app, 3)
        assert app.query_one(EventLog).shown == lines_up_to(log, 3)
        await pilot.press("left")
        await at(pilot, app, 2)
        assert app.query_one(EventLog).shown == lines_up_to(log, 2)
        roster = app.query_one(Roster)
        assert roster.get_cell("Mira", "action") == 'Mira says: "round 1"'
        assert roster.get_cell("Ann", "place") == "square"
        await pilot.press("s")  # one tick, still paused
        await at(pilot, app, 3)
        assert app.query_one(EventLog).shown == lines_up_to(log, 3)
        assert app.control.paused
        await pilot.press("q")


async def test_end_home_and_go_to_a_tick(log):
    app = make_app(log)
    async with app.run_test() as pilot:
        await pilot.press("end")
        await at(pilot, app, TICKS)
        assert app.query_one(EventLog).shown == lines_up_to(log, TICKS)
        await pilot.press("home")
        await at(pilot, app, 1)
        await pilot.press("g", "4", "enter")
        await at(pilot, app, 4)
        assert app.query_one(EventLog).shown == lines_up_to(log, 4)
        assert not app.query_one("#goto").display
        await pilot.press("q")
        await pilot.pause(0.1)
        assert not app.is_running  # q quit the app, not the end of the test
    assert app.control.done.wait(5)  # and the worker ended


def test_cli_with_a_missing_or_foreign_file_exits_2(tmp_path):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello\n")
    for path, says in ((tmp_path / "nope.jsonl", "no event log at"), (foreign, "is not a swarm event log")):
        r = subprocess.run([sys.executable, "-m", "swarm.cli", "replay", str(path), "--tui"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert says in r.stderr and r.stdout == ""


def old_log(log, tmp_path) -> Path:
    """The same run as a log written before joins carried personas, the header named the places and each tick
    ended with a metrics row."""
    import msgspec

    lines = log.read_bytes().splitlines()
    header = {**msgspec.json.decode(lines[0]), "swarm_log": 1}
    header.pop("places")
    events = [e for e in map(msgspec.json.decode, lines[1:]) if "metrics" not in e]
    for e in events:
        if e["kind"] == "join":
            e.pop("data")
    path = tmp_path / "old.jsonl"
    path.write_bytes(b"\n".join(msgspec.json.encode(x) for x in (header, *events)) + b"\n")
    return path


async def test_the_selected_agent_has_a_detail_from_the_log(log):
    app = make_app(log)
    async with app.run_test() as pilot:
        await pilot.press("g", "3", "enter")
        await at(pilot, app, 3)
        pane = app.query_one(AgentDetailPane)
        await until(pilot, lambda: pane.detail is not None and pane.detail.name == "Mira")
        d = pane.detail
        assert d.recorded and d.place == "tavern" and d.persona == {"role": "innkeeper", "traits": "gossips"}
        assert d.action == 'Mira says: "round 2"' and d.plan == []  # she never re-planned in this run
        assert any('Bob says: "round 2"' in m for m in d.memories)  # what she heard, at her place
        assert not any("Ann" in m for m in d.memories)  # Ann waits in the square, out of sight
        assert "prompts are not recorded" in str(pane.render())
        await pilot.press("down", "down")  # Ann, while paused: fresh detail, same tick
        await until(pilot, lambda: pane.detail.name == "Ann")
        assert pane.detail.place == "square" and pane.detail.persona == {"role": "baker"}
        assert app.query_one(SimHeader).tick == 3 and app.query_one(EventLog).shown == lines_up_to(log, 3)
        await pilot.press("right")  # seeking keeps the selection
        await at(pilot, app, 4)
        assert pane.detail.name == "Ann"
        await pilot.press("up")  # Bob, who spoke at tick 3, which the view shows now
        await until(pilot, lambda: pane.detail.name == "Bob")
        assert pane.detail.action == 'Bob says: "round 3"' and any("(tick 3," in m for m in pane.detail.memories)
        await pilot.press("q")


async def test_the_world_tab_in_a_replay(log):
    app = make_app(log)
    async with app.run_test() as pilot:
        await pilot.press("end", "w")
        await at(pilot, app, TICKS)
        view = app.query_one(WorldView)
        await until(pilot, lambda: view.world is not None)
        assert view.world == {"places": {"tavern": ["Mira", "Bob"], "square": ["Ann"]}, "travelling": {}}
        await pilot.press("q")


async def test_a_log_from_before_personas_and_places_still_replays_with_what_it_has(log, tmp_path):
    app = make_app(old_log(log, tmp_path))
    async with app.run_test() as pilot:
        await pilot.press("end")
        await at(pilot, app, TICKS)
        assert app.query_one(EventLog).shown == lines_up_to(log, TICKS)
        pane = app.query_one(AgentDetailPane)
        await until(pilot, lambda: pane.detail is not None)
        assert pane.detail.persona == {"role": "innkeeper"}  # read from the join's text
        assert app.source.places == ["tavern", "square"]  # the places its events name
        await pilot.press("q")
