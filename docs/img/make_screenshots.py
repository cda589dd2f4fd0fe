"""Regenerate the README's TUI screenshots: the bundled village scenario played by the bundled model
swarm-tiny, driven through Textual's Pilot in a 140x44 terminal, saved as SVG next to this file.

    .venv/bin/python docs/img/make_screenshots.py        # about a minute on a laptop CPU

`tui-main.svg` is the main screen after a few ticks; `tui-agent.svg` is the agent detail caught while
the model writes the selected agent's next action. Timings (latency, tokens/s) differ from run to run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from swarm import Simulation
from swarm.tui import Control, LiveSource, finish
from swarm.tui.app import SwarmApp
from swarm.tui.widgets import AgentDetailPane, Roster

HERE = Path(__file__).resolve().parent
SIZE = (140, 44)
TICKS = 8  # past the villagers' first exchanges


async def wait_for(pilot, condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await pilot.pause(0.02)
    return True


async def shown(pilot, app) -> None:
    """Wait until the worker is paused and the views show its last tick."""
    await wait_for(pilot, app.control.idle.is_set)
    await wait_for(pilot, lambda: app.latest is not None and app.latest.tick == app.source.ticks_run)
    await pilot.pause(0.3)


async def main() -> None:
    sim = Simulation.from_scenario("village", seed=7)
    app = SwarmApp(LiveSource(sim, None, Control()), paused=True)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(TICKS):  # one at a time, so the runtime's history has a point per tick
            at = app.source.ticks_run
            await pilot.press("s")
            await wait_for(pilot, lambda at=at: app.source.ticks_run == at + 1)
            await shown(pilot, app)
        app.save_screenshot("tui-main.svg", str(HERE))
        pane, roster = app.query_one(AgentDetailPane), app.query_one(Roster)
        for _ in range(30):  # follow someone who just spoke (likely to answer a reply) until caught writing
            talkers = [e.actor for e in app.latest.events if e.kind == "say" and e.actor in sim.agents]
            if talkers:
                roster.move_cursor(row=roster.get_row_index(talkers[-1]))
            await pilot.pause(0.3)
            at = app.source.ticks_run
            await pilot.press("s")
            if await wait_for(pilot, lambda: pane.partial is not None and len(pane.partial.text) > 32, timeout=20):
                app.save_screenshot("tui-agent.svg", str(HERE))
                break
            await wait_for(pilot, lambda at=at: app.source.ticks_run == at + 1)
            await shown(pilot, app)
        else:
            raise SystemExit("caught nobody writing an action in 30 ticks")
        await wait_for(pilot, lambda: app.control.idle.is_set())
        app.control.pause(True)
        await pilot.press("q")
    finish(app.source)
    await asyncio.to_thread(sim.close)
    print(f"wrote {HERE / 'tui-main.svg'} and {HERE / 'tui-agent.svg'}")


if __name__ == "__main__":
    asyncio.run(main())
