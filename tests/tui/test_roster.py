"""The roster: `f` filters it by name, place or action (live as you type, the cursor staying on its
agent), sorting still works under a filter, the latency column shows each agent's last model time,
and at 1,000 agents an update touches only what changed."""

import time

from swarm import ScriptedModel, Simulation
from swarm.agents.actions import Move
from swarm.model import EngineModel
from swarm.tui import Control, LiveSource
from swarm.tui.app import SwarmApp
from swarm.tui.data import AgentRow
from swarm.tui.source import readable
from swarm.tui.widgets import Roster
from tests.fake_engine import FakeEngine
from tests.tui.test_app import close, idle, make_app, policy, tavern, until


def names(roster: Roster) -> list[str]:
    return [roster.coordinate_to_cell_key((i, 0)).row_key.value for i in range(roster.row_count)]


async def ticks(pilot, app, n: int) -> None:
    """Step `n` ticks (paused) and wait until the views show the last."""
    target = app.source.ticks_run + n
    for _ in range(n):
        await pilot.press("s")
    await until(pilot, lambda: app.source.ticks_run == target)
    await idle(pilot, app)


async def test_f_filters_agents_by_name_place_or_action_as_you_type():
    app = make_app(paused=True)
    async with app.run_test() as pilot:
        await ticks(pilot, app, 1)
        roster, box = app.query_one(Roster), app.query_one("#agent-filter")
        assert names(roster) == ["Mira", "Bob", "Ann"]
        assert app.query_one("#roster-box").border_title == "agents 3"
        await pilot.press("f")
        assert box.display and box.has_focus
        await pilot.press(*"squ")  # a place: no enter needed
        await pilot.pause(0.05)
        assert names(roster) == ["Ann"] and roster.filter == "squ"
        assert app.query_one("#roster-box").border_title == "agents 1 of 3 matching 'squ'"
        await pilot.press(*["backspace"] * 3, *"ROUND")  # an action, any case
        await pilot.pause(0.05)
        assert names(roster) == ["Mira", "Bob"]
        await pilot.press(*["backspace"] * 5, *"bo", "enter")  # a name; enter closes the box
        await pilot.pause(0.05)
        assert names(roster) == ["Bob"] and not box.display and roster.has_focus
        assert app.control.selected == "Bob"  # the cursor's agent was filtered out: the one it lands on
        await pilot.press("f", "backspace", "backspace", "escape")  # emptied: everyone again
        await pilot.pause(0.05)
        assert names(roster) == ["Mira", "Bob", "Ann"] and roster.filter == ""
        assert app.control.selected == "Bob"  # and the cursor stayed on Bob
        await pilot.press("q")
    await close(app)


async def test_the_filter_follows_ticks_and_a_sort_survives_it():
    def bob_leaves(turn):
        if turn.agent.id == "Bob" and turn.request.kind == "act" and turn.world.tick == 1:
            return Move(to="square")
        return policy(turn)

    sim = tavern()
    sim.model = ScriptedModel(bob_leaves, ref="scripted-test")
    app = make_app(sim, paused=True)
    async with app.run_test() as pilot:
        await ticks(pilot, app, 1)
        roster = app.query_one(Roster)
        await pilot.click(Roster, offset=(3, 0))  # sort by name: Ann, Bob, Mira
        await pilot.press("f", *"tavern", "enter")
        await pilot.pause(0.05)
        assert names(roster) == ["Bob", "Mira"]  # sorted, filtered
        await ticks(pilot, app, 2)  # Bob walks to the square
        assert roster.get_cell("Mira", "place") == "tavern"
        assert names(roster) == ["Mira"]
        await pilot.press("f", *["backspace"] * 6, "enter")
        await pilot.pause(0.05)
        assert names(roster) == ["Ann", "Bob", "Mira"]  # the sort still holds
        assert roster.get_cell("Bob", "place") == "square"
        await pilot.press("q")
    await close(app)


async def test_latency_column_shows_the_last_turn_of_model_agents_and_a_dash_for_scripted_ones():
    engine = FakeEngine(chars_per_step=8, step_s=0.05)
    sim = tavern()
    sim.model = EngineModel(engine, ref="fake-engine", clock=engine.clock)
    app = make_app(sim, paused=True)
    async with app.run_test() as pilot:
        await ticks(pilot, app, 1)
        roster = app.query_one(Roster)
        for name, agent in sim.agents.items():
            steps = -(-len(agent.history[-1]["content"]) // 8)
            assert roster.get_cell(name, "latency") == f"{steps * 0.05:.2f} s"
        latencies = sorted(a.last_latency for a in sim.agents.values())
        assert latencies[0] < latencies[-1]  # Mira's line is longer than Bob's and Ann's
        assert roster.get_cell("Mira", "action") == 'say "Mira says hello, turn 0"'
        await pilot.click(Roster, offset=(31, 0))  # the "latency" header: quickest first
        assert roster.get_cell(names(roster)[0], "latency") == f"{latencies[0]:.2f} s"
        assert names(roster)[-1] == "Mira"
        await pilot.click(Roster, offset=(31, 0))  # again: slowest first
        assert names(roster)[0] == "Mira"
        await pilot.press("q")
    await close(app)
    scripted = make_app(paused=True)
    async with scripted.run_test() as pilot:
        await ticks(pilot, scripted, 1)
        roster = scripted.query_one(Roster)
        assert [roster.get_cell(n, "latency") for n in ("Mira", "Bob", "Ann")] == ["-", "-", "-"]
        await pilot.press("q")
    await close(scripted)


def test_readable_actions():
    assert readable('{"type":"say","text":"hi there","to":null}') == 'say "hi there"'
    assert readable('{"type":"move","to":"square"}') == "move to=square"
    assert readable("not json") == "not json" and readable("[1, 2]") == "[1, 2]"


async def test_a_thousand_agents_update_only_what_changed_even_under_a_filter(monkeypatch):
    app = SwarmApp(LiveSource(tavern(), None, Control()), paused=True)
    app.flush = lambda: None  # the roster is driven by hand here, not by the (3-agent) simulation
    rows = [AgentRow(f"agent{i:04d}", f"desk{i % 10}", f"say {i}", "work", 0.5) for i in range(1000)]
    async with app.run_test(size=(160, 50)) as pilot:
        roster = app.query_one(Roster)
        t0 = time.perf_counter()
        roster.show(rows)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        roster.set_filter("desk3")
        filtered = time.perf_counter() - t0
        assert roster.row_count == 100
        calls = []
        for name in ("clear", "add_row", "remove_row", "update_cell"):
            real = getattr(roster, name)
            monkeypatch.setattr(roster, name, lambda *a, _n=name, _r=real, **k: (calls.append(_n), _r(*a, **k))[1])
        t0 = time.perf_counter()
        roster.show(list(rows))  # a tick where nothing changed
        same = time.perf_counter() - t0
        assert calls == []
        moved = list(rows)
        moved[1] = AgentRow("agent0001", "desk3", "say 1", "work", 0.5)  # walks to desk 3: shown now
        moved[13] = AgentRow("agent0013", "desk4", "say 13", "work", 0.5)  # leaves desk 3: hidden now
        moved[23] = AgentRow("agent0023", "desk3", "say 23", "work", 0.9)  # shown, its latency changes
        moved[30] = AgentRow("agent0030", "desk0", "say more", "work", 0.7)  # hidden, changes: nothing to draw
        t0 = time.perf_counter()
        roster.show(moved)
        changed = time.perf_counter() - t0
        assert sorted(calls) == ["add_row", "remove_row", "update_cell"]
        assert roster.row_count == 100 and roster.get_cell("agent0023", "latency") == "0.90 s"
        print(f"1,000 rows: first show {first * 1000:.1f} ms, filter {filtered * 1000:.1f} ms, "
              f"unchanged tick {same * 1000:.2f} ms, four rows changed {changed * 1000:.2f} ms")
        assert same < 0.05 and changed < 0.05  # generous for a loaded 2-core machine: typically ~1 ms
        await pilot.press("q")
    await close(app)


async def test_a_thousand_agent_run_redraws_quickly_with_a_filter_and_the_world_tab():
    sim = Simulation.from_scenario("support_desk", model="scripted", agents=1000)
    app = SwarmApp(LiveSource(sim, 4), refresh_s=0.25)
    spent = []
    real = app.flush

    def timed():
        t0 = time.perf_counter()
        real()
        spent.append(time.perf_counter() - t0)

    app.flush = timed
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("w", "f", *"queue", "enter")
        await until(pilot, lambda: app.source.ticks_run == 4, timeout=90)
        await until(pilot, lambda: app.latest is not None and app.latest.tick == sim.world.tick)
        await pilot.pause(0.5)
        roster = app.query_one(Roster)
        assert len(roster._rows) >= 1000 and 0 < roster.row_count < len(roster._rows)
        busy = [s for s in spent if s > 0.0005]  # the flushes that had a tick to show
        print(f"1,000 agents, filter and world tab: {len(busy)} redraws, mean {sum(busy) / len(busy) * 1000:.1f} ms, "
              f"longest {max(busy) * 1000:.1f} ms")
        assert max(busy) < 1.0
        await pilot.press("q")
    await close(app)
