"""The world tab: `w` switches the right pane to the places and who is where (the selected agent
marked) and back; it follows agents on the road; the runtime panel beside it shows batch sizes and
expert load from the engine's stats, and says why when there are none."""

from textual.widgets import TabbedContent

from swarm import ScriptedModel
from swarm.agents.actions import Move
from swarm.tui.widgets import ExpertLoad, RuntimePanel, WorldView
from tests.tui.fakes import engine_tavern
from tests.tui.test_app import close, make_app, policy, tavern
from tests.tui.test_roster import ticks


async def test_w_shows_the_world_and_who_is_where():
    def bob_leaves(turn):
        if turn.agent.id == "Bob" and turn.request.kind == "act" and turn.world.tick == 1:
            return Move(to="square")
        return policy(turn)

    sim = tavern()
    sim.model = ScriptedModel(bob_leaves, ref="scripted-test")
    sim.world.graph["tavern"]["square"]["minutes"] = 3.0  # a walk of three ticks
    app = make_app(sim, paused=True)
    async with app.run_test() as pilot:
        await ticks(pilot, app, 1)
        tabs, view = app.query_one(TabbedContent), app.query_one(WorldView)
        assert tabs.active == "agent-tab"
        await pilot.press("w")
        assert tabs.active == "world-tab" and view.display
        assert view.world["places"] == {"tavern": ["Mira", "Bob"], "square": ["Ann"]}
        shown = str(view.render())
        assert "[b]tavern[/b] [dim]2[/dim]" in shown and "[reverse]Mira[/reverse], Bob" in shown
        await pilot.press("down")  # Bob is selected: marked in the world too
        await pilot.pause(0.1)
        assert view.selected == "Bob" and "Mira, [reverse]Bob[/reverse]" in str(view.render())
        await ticks(pilot, app, 1)  # Bob sets off for the square
        assert view.world["travelling"] == {"Bob": "square"}
        assert "on the road" in str(view.render()) and "[reverse]Bob[/reverse] -> square" in str(view.render())
        await ticks(pilot, app, 3)  # and arrives
        assert view.world["places"]["square"] == ["Bob", "Ann"] and not view.world["travelling"]
        await pilot.press("w")
        assert tabs.active == "agent-tab"
        await pilot.press("q")
    await close(app)


async def test_the_runtime_panel_shows_batches_and_expert_load_or_why_not():
    sim, engine = engine_tavern(layers=3, experts=6)
    app = make_app(sim, paused=True)
    async with app.run_test(size=(140, 50)) as pilot:
        await ticks(pilot, app, 2)
        panel = app.query_one(RuntimePanel)
        numbers = str(panel.query_one("#runtime-numbers").render())
        stats = engine.stats()
        assert f"batch {stats['last_batch_seqs']:>6} seqs" in numbers and "prefix-cache hit 75%" in numbers
        assert "KV pool 12%" in numbers
        load = app.query_one(ExpertLoad)
        assert load.display and load.load == stats["expert_load"]
        rows = str(load.render()).splitlines()
        assert rows[0].startswith("expert load") and [r[:4] for r in rows[1:]] == ["L0  ", "L1  ", "L2  "]
        assert all(len(r.split()[1]) == 6 for r in rows[1:])  # a bar per expert
        assert load.region.height == 4  # a line per layer, none cut off
        await pilot.press("q")
    await close(app)
    scripted = make_app(paused=True)
    async with scripted.run_test() as pilot:
        await ticks(pilot, scripted, 1)
        panel = scripted.query_one(RuntimePanel)
        assert "no runtime stats: the model is scripted" in str(panel.query_one("#runtime-numbers").render())
        assert not panel.query_one(ExpertLoad).display
        await pilot.press("q")
    await close(scripted)
