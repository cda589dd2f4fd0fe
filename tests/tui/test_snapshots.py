"""SVG snapshots after deterministic ticks (a scripted model, or the fake engine with its own clock, a
fixed seed, the sim's own clock; the loop's timings are masked): the main screen, the agent detail,
the world tab, and an action streaming in with the runtime's stats. Update with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs before committing them."""

from swarm.tui import Control, LiveSource, finish
from swarm.tui.app import SwarmApp
from swarm.tui.widgets import AgentDetailPane, MetricsPanel
from tests.tui.fakes import engine_tavern
from tests.tui.test_app import idle, tavern, until

TIMED = ("model_seconds", "loop_seconds")


async def mask_timings(pilot) -> None:
    panel = pilot.app.query_one(MetricsPanel)
    panel.metrics = {k: v for k, v in panel.metrics.items() if k not in TIMED}
    await pilot.pause(0.05)


async def step(pilot, app) -> None:
    """One tick, shown (one redraw per tick: the runtime's history is the same every run)."""
    at = app.source.ticks_run
    await pilot.press("s")
    await until(pilot, lambda: app.source.ticks_run == at + 1)
    await idle(pilot, app)


def screen(snap_compare, *keys: str) -> bool:
    app = SwarmApp(LiveSource(tavern(), None, Control()), refresh_s=0.05, paused=True)

    async def two_ticks(pilot):
        await pilot.press("s", "s")
        await until(pilot, lambda: app.source.ticks_run == 2)
        await idle(pilot, app)
        for key in keys:
            await pilot.press(key)
        await until(pilot, lambda: app.query_one(AgentDetailPane).detail is not None)
        await idle(pilot, app)
        await mask_timings(pilot)

    try:
        return snap_compare(app, terminal_size=(140, 40), run_before=two_ticks)
    finally:
        finish(app.source)
        app.source.sim.close()


def test_main_screen(snap_compare):
    assert screen(snap_compare)


def test_agent_detail_of_the_second_agent(snap_compare):
    assert screen(snap_compare, "down")


def test_world_tab(snap_compare):
    assert screen(snap_compare, "w")


def test_an_action_streaming_in_with_the_runtime_stats(snap_compare):
    sim, engine = engine_tavern(chars_per_step=8)
    app = SwarmApp(LiveSource(sim, None, Control()), refresh_s=0.05, paused=True)
    stop = app.control.stop
    app.control.stop = lambda: (stop(), engine.ungate())  # the app waits for its worker as it exits

    async def streaming(pilot):
        await step(pilot, app)
        await step(pilot, app)
        await pilot.press("down")  # Bob
        pane = app.query_one(AgentDetailPane)
        await until(pilot, lambda: pane.detail is not None and pane.detail.name == "Bob")
        engine.gated = True
        await pilot.press("s")
        engine.release(3)  # three steps into the third tick: 24 characters written
        await until(pilot, lambda: pane.partial is not None and len(pane.partial.text) == 24)
        await mask_timings(pilot)

    try:
        assert snap_compare(app, terminal_size=(140, 44), run_before=streaming)
    finally:
        engine.ungate()
        finish(app.source)
        sim.close()


def test_playing_an_agent_shows_its_prompt_and_the_form(snap_compare):
    from textual.widgets import Select

    from swarm.tui.play import PlayScreen

    app = SwarmApp(LiveSource(tavern(), None, Control()), refresh_s=0.05, paused=True)

    async def take_bob(pilot):
        await idle(pilot, app)
        await pilot.press("down", "c")
        await until(pilot, lambda: "Bob" in app.source.sim.players)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, PlayScreen))
        form = app.screen
        form.query_one("#play-action", Select).value = [a.tag for a in form.actions].index("say")
        await pilot.pause(0.2)

    try:
        return_value = snap_compare(app, terminal_size=(140, 40), run_before=take_bob)
    finally:
        app.control.stop()  # the waiting turn gives up, and the worker ends
        finish(app.source)
        app.source.sim.close()
    assert return_value
