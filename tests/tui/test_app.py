"""The live TUI driven by Textual's Pilot over a scripted simulation: ticks advance, pause and step,
filter, select, inject, quit, and a 1,000-agent world stays responsive."""

import asyncio
import threading
import time

import pytest

from swarm import Persona, ScriptedModel, Simulation
from swarm.agents.actions import Insight, PlanUpdate, Say, Wait
from swarm.events import Report
from swarm.tui import Control, LiveSource, finish
from swarm.tui.app import SwarmApp
from swarm.tui.widgets import AgentDetailPane, EventLog, Roster, SimHeader


def policy(turn):
    """Mira and Bob answer each other every tick (so something happens each tick); Ann waits."""
    kind = turn.request.kind
    if kind == "plan":
        return PlanUpdate(steps=["serve ale"])
    if kind == "reflect":
        return Insight(text="noted")
    if turn.agent.id in ("Mira", "Bob"):
        return Say(text=f"round {turn.world.tick}")
    return Wait()


def tavern(**options) -> Simulation:
    """Mira and Bob talk every tick, Ann waits; `options` go to Simulation (record=, bus=)."""
    sim = Simulation(ScriptedModel(policy, ref="scripted-test"), seed=3, name="tavern", **options)
    sim.world.add_place("tavern")
    sim.world.add_place("square")
    sim.world.connect("tavern", "square", minutes=1)
    sim.add_agent(Persona(name="Mira", role="innkeeper", traits="gossips", goals=("keep the tavern full",)),
                  at="tavern")
    sim.add_agent(Persona(name="Bob", role="smith"), at="tavern")
    sim.add_agent(Persona(name="Ann", role="baker"), at="square")
    return sim


def make_app(sim=None, ticks=None, paused=False, delay=0.0) -> SwarmApp:
    return SwarmApp(LiveSource(sim or tavern(), ticks, Control(delay=delay)), refresh_s=0.05, paused=paused)


async def until(pilot, cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting; header: {pilot.app.query_one(SimHeader).status}"
        await pilot.pause(0.02)


async def idle(pilot, app):
    """Wait until the worker is parked (paused) and its last tick has reached the app and the views."""
    await until(pilot, app.control.idle.is_set)
    await pilot.pause(0.1)
    await until(pilot, lambda: app.latest is not None and app.latest.tick == app.source.ticks_run)
    await pilot.pause(0.1)


async def close(app) -> Report:
    """After the app quit: stop the worker, report, and close the simulation (off the test's event loop)."""
    report = finish(app.source)
    await asyncio.to_thread(app.source.sim.close)
    return report


async def test_ticks_advance_and_the_header_shows_them():
    app = make_app(delay=0.01)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ticks_seen >= 3)
        await pilot.pause(0.15)
        header = app.query_one(SimHeader)
        assert header.tick >= 3
        assert f"tick {header.tick}" in str(header.render())
        assert header.scenario == "tavern" and header.model == "scripted-test"
        assert app.query_one(Roster).row_count == 3
        await pilot.press("q")
    assert (await close(app)).ticks >= 3


async def test_p_pauses_and_s_steps_exactly_one_tick():
    app = make_app(delay=0.01)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ticks_seen >= 2)
        await pilot.press("p")
        assert app.control.paused
        await idle(pilot, app)
        stopped_at = app.source.ticks_run
        await pilot.pause(0.3)
        assert app.source.ticks_run == stopped_at and app.latest.tick == stopped_at
        await pilot.press("s")
        await until(pilot, lambda: app.source.ticks_run == stopped_at + 1)
        await idle(pilot, app)
        await pilot.pause(0.2)
        assert app.source.ticks_run == stopped_at + 1
        assert app.query_one(SimHeader).tick == app.latest.tick == stopped_at + 1
        await pilot.press("p")  # resumes
        await until(pilot, lambda: app.source.ticks_run > stopped_at + 2)
        await pilot.press("q")
    await close(app)


async def test_slash_filters_the_event_log():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        for _ in range(3):
            await pilot.press("s")
        await until(pilot, lambda: app.source.ticks_run == 3)
        await idle(pilot, app)
        log = app.query_one(EventLog)
        assert any("round 1" in line for line in log.shown) and any("join" in line for line in log.shown)
        await pilot.press("slash")
        await pilot.press(*"round 1", "enter")
        await pilot.pause(0.1)
        assert log.filter == "round 1"
        assert log.shown and all("round 1" in line for line in log.shown)
        assert not any("join" in line for line in log.shown)
        await pilot.press("slash")
        box = app.query_one("#filter")
        assert box.display and box.has_focus and box.value == "round 1"
        await pilot.press("escape")  # closes the box, keeps the filter
        assert not box.display and app.query_one(Roster).has_focus and log.filter == "round 1"
        await pilot.press("slash")
        await pilot.press(*["backspace"] * 7, "enter")  # an empty filter shows everything again
        await pilot.pause(0.1)
        assert any("join" in line for line in log.shown)
        await pilot.press("q")
    await close(app)


async def test_selecting_a_row_shows_that_agents_detail():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        await pilot.press("s", "s")
        await until(pilot, lambda: app.source.ticks_run == 2)
        await idle(pilot, app)
        pane = app.query_one(AgentDetailPane)
        assert app.query_one(Roster).selected == "Mira"
        await until(pilot, lambda: pane.detail is not None)
        d = pane.detail
        assert d.name == "Mira" and d.persona["role"] == "innkeeper" and d.adapter is None
        assert d.plan == [("active", "keep the tavern full")]  # the goal is her step; she works on it
        assert "round" in d.action and "Answer with one action" in d.prompt
        assert d.memories
        await pilot.press("down")  # Bob, while paused: the worker answers with fresh detail, no tick
        await until(pilot, lambda: pane.detail is not None and pane.detail.name == "Bob")
        assert pane.detail.persona["role"] == "smith" and "Bob" in str(pane.render())
        assert app.source.ticks_run == 2
        await pilot.press("q")
    await close(app)


async def test_i_injects_a_message_the_agent_receives_next_tick():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await until(pilot, lambda: app.source.ticks_run == 1)
        await idle(pilot, app)
        await pilot.press("down")  # Bob
        await until(pilot, lambda: app.control.selected == "Bob")
        await pilot.press("i")
        await pilot.press(*"the forge is on fire", "enter")
        await pilot.pause(0.05)
        await pilot.press("s")
        await until(pilot, lambda: app.source.ticks_run == 2)
        await idle(pilot, app)
        inbox = [e for e in app.latest.events if e.kind == "inbox"]
        assert len(inbox) == 1 and inbox[0].target == "Bob" and "the forge is on fire" in inbox[0].text
        bob = app.source.sim.agents["Bob"]
        assert any("the forge is on fire" in m.text for m in bob.memory)
        assert any("the forge is on fire" in line for line in app.query_one(EventLog).shown)
        await pilot.press("q")
    await close(app)


async def test_q_quits_and_the_report_counts_the_ticks_run():
    app = make_app(ticks=2)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.source.ticks_run == 2)
        await pilot.pause(0.3)
        assert app.source.ticks_run == 2  # the run stops at its ticks, the app stays
        assert app.is_running and app.query_one(SimHeader).status == "finished 2 ticks"
        await pilot.press("p", "s")  # nothing more to run
        await pilot.pause(0.2)
        assert app.source.ticks_run == 2 and app.query_one(SimHeader).status == "finished 2 ticks"
        await pilot.press("q")
    await asyncio.sleep(0)
    assert not app.is_running
    report = await close(app)
    assert isinstance(report, Report) and report.ticks == 2 and report.metrics["agents"] == 3


async def test_a_thousand_agents_tick_without_freezing_the_ui(frozen_heap):
    sim = Simulation.from_scenario("support_desk", model="scripted", agents=1000)
    app = SwarmApp(LiveSource(sim, 3), refresh_s=0.25)
    beats = []
    async with app.run_test(size=(160, 50)) as pilot:
        app.set_interval(0.05, lambda: beats.append(time.monotonic()))  # the UI's heartbeat while ticks run
        t0 = time.monotonic()
        await until(pilot, lambda: app.source.ticks_run == 3, timeout=60)
        await until(pilot, lambda: app.latest is not None and app.latest.tick == sim.world.tick)
        # the next coalesced flush shows it (a flush of 1,000 rows takes a while on a loaded machine)
        await until(pilot, lambda: app.query_one(SimHeader).tick == sim.world.tick)
        ran = time.monotonic() - t0
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        print(f"3 ticks at 1,000 agents in {ran:.2f}s; longest UI stall {max(gaps):.3f}s over {len(gaps)} beats")
        assert len(beats) >= 3 and max(gaps) < 1.0  # the UI kept running while the worker ticked
        assert app.query_one(Roster).row_count == len(sim.agents) >= 1000
        await pilot.press("q")
    await close(app)


async def test_the_ui_answers_while_a_slow_model_decides(frozen_heap):
    inside, release = threading.Event(), threading.Event()

    class Slow(ScriptedModel):
        def decide(self, turns):
            inside.set()
            release.wait(10)  # a model forward that takes as long as the test wants (releases the GIL, as torch)
            return super().decide(turns)

    sim = tavern()
    sim.model = Slow(policy, ref="slow")
    app = make_app(sim)
    beats = []
    async with app.run_test() as pilot:
        app.set_interval(0.05, lambda: beats.append(time.monotonic()))
        await until(pilot, inside.is_set)  # the worker is inside the first tick's model call now
        assert app.source.ticks_run == 0
        await pilot.press("p")
        assert app.control.paused and app.query_one(SimHeader).status == "paused"
        beats.clear()  # from here on only the model is busy (not the app starting up)
        await pilot.pause(0.5)  # the model still deciding: the UI keeps beating
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        assert len(gaps) >= 3 and max(gaps) < 0.5, f"the UI stalled {max(gaps):.2f}s while the model decided"
        release.set()
        await until(pilot, lambda: app.source.ticks_run == 1)  # the tick in flight completes, then it stops
        await pilot.pause(0.2)
        assert app.source.ticks_run == 1
        await pilot.press("q")
    await close(app)


async def test_fast_ticks_are_coalesced_into_a_few_redraws_a_second(monkeypatch):
    shows = []
    real = Roster.show
    monkeypatch.setattr(Roster, "show", lambda self, rows: (shows.append(time.monotonic()), real(self, rows)))
    app = SwarmApp(LiveSource(tavern(), None, Control(delay=0.0)), refresh_s=0.25)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ticks_seen >= 1)
        t0, ticks0, shows0 = time.monotonic(), app.ticks_seen, len(shows)
        await pilot.pause(1.0)
        ticks, redraws, spent = app.ticks_seen - ticks0, len(shows) - shows0, time.monotonic() - t0
        assert ticks >= 20, f"only {ticks} ticks in {spent:.1f}s"
        assert 1 <= redraws <= spent / 0.25 + 2, f"{redraws} redraws for {ticks} ticks in {spent:.1f}s"
        await pilot.press("p")
        await idle(pilot, app)
        await pilot.pause(0.3)
        assert app.query_one(SimHeader).tick == app.latest.tick  # the last redraw showed the newest tick
        await pilot.press("q")
    await close(app)


async def test_a_scenario_that_raises_shows_the_error_and_run_tui_raises_it():
    def broken(turn):
        if turn.world.tick == 1:
            raise RuntimeError("the policy broke")
        return policy(turn)

    sim = tavern()
    sim.model = ScriptedModel(broken, ref="broken")
    app = make_app(sim)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.control.done.is_set())
        await pilot.pause(0.1)
        status = app.query_one(SimHeader).status
        assert status.startswith("error") and "the policy broke" in status
        assert app.source.ticks_run == 1
        await pilot.press("q")
    with pytest.raises(RuntimeError, match="the policy broke"):
        finish(app.source)
    await asyncio.to_thread(sim.close)


async def test_zero_ticks_runs_nothing_and_says_so():
    app = make_app(ticks=0)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.finished is not None)
        await pilot.press("s")
        await pilot.pause(0.2)
        assert app.source.ticks_run == 0 and app.query_one(SimHeader).status == "finished 0 ticks"
        await pilot.press("q")
    assert (await close(app)).ticks == 0


async def test_clicking_a_roster_header_sorts_by_it_and_again_reverses():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await until(pilot, lambda: app.source.ticks_run == 1)
        await idle(pilot, app)
        roster = app.query_one(Roster)

        def names():
            return [roster.coordinate_to_cell_key((i, 0)).row_key.value for i in range(roster.row_count)]

        assert names() == ["Mira", "Bob", "Ann"]  # the order they joined
        await pilot.click(Roster, offset=(3, 0))  # the "name" header
        assert names() == ["Ann", "Bob", "Mira"]
        await pilot.click(Roster, offset=(3, 0))
        assert names() == ["Mira", "Bob", "Ann"]  # Z to A
        await pilot.press("q")
    await close(app)
