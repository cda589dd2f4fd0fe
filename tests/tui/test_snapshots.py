"""SVG snapshots of the main screen and the agent detail after two deterministic ticks (a scripted
model, a fixed seed, the sim's own clock; the loop's timings are masked). Update with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs before committing them."""

from swarm.tui import Control, LiveSource, finish
from swarm.tui.app import SwarmApp
from swarm.tui.widgets import AgentDetailPane, MetricsPanel
from tests.tui.test_app import idle, tavern, until

TIMED = ("model_seconds", "loop_seconds")


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
        panel = app.query_one(MetricsPanel)
        panel.metrics = {k: v for k, v in panel.metrics.items() if k not in TIMED}
        await pilot.pause(0.05)

    try:
        return snap_compare(app, terminal_size=(140, 40), run_before=two_ticks)
    finally:
        finish(app.source)
        app.source.sim.close()


def test_main_screen(snap_compare):
    assert screen(snap_compare)


def test_agent_detail_of_the_second_agent(snap_compare):
    assert screen(snap_compare, "down")
