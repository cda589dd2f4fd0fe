"""The terminal UI (Textual): `run_tui(sim, ticks)` runs a simulation and shows it as it goes;
`replay_tui(path)` plays a recorded event log back, with pause, step and seek; `watch_tui(url, sim_name)`
follows a simulation running elsewhere over an MQTT broker."""

from __future__ import annotations

from collections.abc import Iterable

from swarm.events import Report
from swarm.tui.source import Control, LiveSource, TickData

__all__ = ["Control", "LiveSource", "TickData", "finish", "replay_tui", "run_tui", "watch_tui"]


def run_tui(sim, ticks: int | None = None, *, delay: float = 0.0, play: Iterable[str] = ()) -> Report:
    """Run `sim` in the TUI until the user quits (after `ticks` ticks it pauses, still shown); returns the
    report over the ticks that ran. The person plays the agents in `play` from the start (their turns ask
    for an action in a form; c on the roster takes or gives back any agent). The caller keeps owning `sim`
    (close it afterwards)."""
    from swarm.tui.app import SwarmApp  # textual loads only when the UI is wanted

    source = LiveSource(sim, ticks, Control(delay=delay))
    for agent in play:
        if agent not in sim.agents:
            raise ValueError(f"no agent called {agent!r} to play; agents: {', '.join(sim.agents)}")
        source.control.take(agent)
    SwarmApp(source).run()
    return finish(source)


def finish(source: LiveSource) -> Report:
    """Stop the worker, wait for its tick in flight, and report the ticks it ran."""
    source.control.stop()
    if source.started:
        source.control.done.wait()
    if source.error is not None:
        raise source.error
    return source.sim.report(ticks=source.ticks_run, seconds=round(source.seconds, 4))


def replay_tui(path, *, delay: float = 0.25) -> None:
    """Play the event log at `path` in the TUI until the user quits. A missing file or one that is not
    a swarm log raises ValueError here, before the app starts."""
    from swarm.tui.replay import ReplayControl, ReplaySource

    source = ReplaySource(path, ReplayControl(delay=delay))  # reads the log: errors before textual loads
    from swarm.tui.app import SwarmApp

    SwarmApp(source).run()
    source.control.stop()


def watch_tui(url: str, sim_name: str) -> None:
    """Follow the simulation `sim_name` on the MQTT broker at `url` (mqtt:// or mqtts://, see
    `swarm.bus.url`) in the TUI until the user quits. A URL that is not an MQTT broker's raises ValueError
    here, before the app starts; an unreachable broker is shown in the header and retried."""
    from swarm.bus import open_bus
    from swarm.bus.url import broker_url

    broker_url(url, "swarm watch")
    open_bus(url)  # checks the URL only: nothing connects until the watcher runs
    from swarm.tui.watch import WatchApp, WatchSource

    source = WatchSource(url, sim_name)
    WatchApp(source).run()
    source.control.stop()
