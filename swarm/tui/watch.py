"""Ticks from a simulation running elsewhere: `swarm watch mqtt://host:port --sim NAME` (or mqtts://).

The worker thread runs its own asyncio loop with an MqttBus subscribed to the simulation's events
and its retained world snapshot. Events are grouped by their `tick`; a group is shown once an event
of a later tick arrives or nothing came for `quiet_s`. Pausing only stops the display: ticks keep
buffering and show when it resumes. The header tells what is wrong, and the watcher carries on:
an unreachable broker is retried every `retry_s` seconds; a broker lost mid-run is reconnected to
(the bus does it; the watcher says so meanwhile); no retained snapshot of the simulation within
`missing_s` means no simulation of that name (yet), and the header names those there are; a
simulation that closed (its presence went offline) leaves its last state on screen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from textual.message import Message

from swarm.bus import BusError, open_bus, topics
from swarm.bus.url import parse_bus_url
from swarm.events import Event
from swarm.tui import from_events
from swarm.tui.app import SwarmApp
from swarm.tui.data import TREND_TICKS, model_label
from swarm.tui.from_events import roster
from swarm.tui.messages import Finished, Ticked
from swarm.tui.source import AgentRow, Control, TickData
from swarm.tui.widgets import SimHeader

POLL_S = 0.05


class WatchSource:
    """Ticks of the simulation `sim` on the broker at `url`. `run` is the worker's body (never the UI's)."""

    no_stats = "no runtime stats: the simulation's model is scripted (or its report has not come yet)"

    def __init__(self, url: str, sim: str, control: Control | None = None, *, quiet_s: float = 0.3,
                 retry_s: float = 3.0, missing_s: float = 3.0, connect_timeout: float = 2.0) -> None:
        self.url, self.sim = url, sim
        parts = parse_bus_url(url)
        self.shown_url, self.address = parts.shown, f"{parts.host}:{parts.port}"  # never the password
        self.control = control or Control()
        self.quiet_s, self.retry_s, self.missing_s, self.connect_timeout = quiet_s, retry_s, missing_s, connect_timeout
        self.ticks_run = 0  # ticks shown
        self.error: BaseException | None = None
        self.started = False
        self.world: dict[str, Any] | None = None  # the latest snapshot
        self.report: dict[str, Any] = {}  # the latest report: metrics and the model's stats
        self.history: list[Event] = []
        self.trend: deque[dict[str, Any]] = deque(maxlen=TREND_TICKS)  # the report's history rows, oldest first
        self.ready: deque[TickData] = deque()  # completed ticks not shown yet (while paused)
        self._group: list[Event] = []
        self._last_event = 0.0
        self._shown_tick = -1
        self._posted: TickData | None = None  # the last data shown
        self.others: set[str] = set()  # the simulations with a world snapshot on the broker
        self.offline = False  # the simulation's presence says it closed

    @property
    def scenario(self) -> str:
        return self.sim

    @property
    def model(self) -> str:
        model = self.report.get("model")
        if model is None:
            return f"watching {self.shown_url}"
        label = model_label(str(model), self.report.get("device"), self.report.get("models"))
        return f"{label}, watched at {self.shown_url}"

    def run(self, post: Callable[[Any], None], finished: Callable[[str], None],
            status: Callable[[str | None], None] | None = None) -> None:
        """Watch until stopped: `post(TickData)` per completed tick, `status(text)` for the connection's state
        (None: all is well), `finished(why)` only if the watcher itself fails."""
        self.started = True
        try:
            asyncio.run(self._watch(post, status or (lambda text: None)))
        except Exception as e:  # shown in the UI
            self.error = e
            finished(f"error: {type(e).__name__}: {e}")
        finally:
            self.control.done.set()
            self.control.idle.set()

    async def _wait(self, seconds: float) -> None:
        """Sleep, cut short by a stop."""
        deadline = time.monotonic() + seconds
        while not self.control.stopped and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)

    async def _watch(self, post: Callable[[Any], None], status: Callable[[str | None], None]) -> None:
        c = self.control
        while not c.stopped:
            bus = open_bus(self.url, client_id=f"swarm-watch-{uuid.uuid4().hex[:8]}",
                           connect_timeout=self.connect_timeout)
            try:
                status(f"connecting to {self.shown_url}")
                connecting = asyncio.ensure_future(bus.connect())
                while not connecting.done() and not c.stopped:
                    await asyncio.sleep(POLL_S)
                if c.stopped:
                    connecting.cancel()
                    await asyncio.gather(connecting, return_exceptions=True)
                    return
                try:
                    connecting.result()
                except BusError as e:
                    status(f"{e} (retrying every {self.retry_s:g} s)")
                    await self._wait(self.retry_s)
                    continue
                await self._follow(bus, post, status)
            finally:
                await bus.close()

    async def _follow(self, bus, post: Callable[[Any], None], status: Callable[[str | None], None]) -> None:
        c = self.control
        events = await bus.subscribe(topics.events(self.sim), type=Event)
        worlds = await bus.subscribe(topics.world(topics.ANY), type=dict)  # every sim's: to name them if ours is not
        presence = await bus.subscribe(topics.presence(self.sim, f"{self.sim}-sim"), type=dict)
        reports = await bus.subscribe(topics.report(self.sim), type=dict)
        since = time.monotonic()
        said: str | None = ""
        while not c.stopped:
            now = time.monotonic()
            for m in worlds.drain():
                name = topics.levels(m.topic)[1]
                if name == self.sim:
                    self.world = m.payload
                else:
                    self.others.add(name)
            for m in presence.drain():
                self.offline = m.payload.get("status") == "offline"
            for m in reports.drain():
                self.report = m.payload
                self._add_row(m.payload.get("row"))
            for m in events.drain():
                e: Event = m.payload
                if self._group and e.tick > self._group[-1].tick:
                    self._complete()
                self._group.append(e)
                self._last_event = now
            if self._group and now - self._last_event >= self.quiet_s:
                self._complete()
            elif not self._group and self.world is not None and self.world.get("tick", -1) > self._shown_tick:
                self.ready.append(self._data([]))  # a tick with no events: the counter still moves
            if c._detail_wanted:
                c._detail_wanted = False
                self._detail(post)
            self._show(post)
            text = self._status(getattr(bus, "connected", True), now - since)
            if text != said:
                said = text
                status(text)
            await asyncio.sleep(POLL_S)

    def _status(self, connected: bool, waited: float) -> str | None:
        """What the header says about the connection and the simulation (None: all is well)."""
        if not connected:
            return f"lost the MQTT broker at {self.address}; reconnecting"
        if self.world is None and waited < self.missing_s:
            return f"waiting for {self.sim}"
        if self.world is None:
            there = f"; on it: {', '.join(sorted(self.others))}" if self.others else ""
            return f"no simulation named {self.sim} on this broker (yet){there}"
        if self.offline:
            return f"{self.sim} has stopped; its last state is shown"
        return None

    def _add_row(self, row: Any) -> None:
        """Keep a report's history row; the same tick again (a retained report) is kept once, an earlier one
        means the simulation started over."""
        if not isinstance(row, dict) or not isinstance(row.get("tick"), int):
            return
        if self.trend and row["tick"] <= self.trend[-1]["tick"]:
            if row["tick"] == self.trend[-1]["tick"]:
                return
            self.trend.clear()
        self.trend.append(row)

    def _detail(self, post: Callable[[Any], None]) -> None:
        """Fresh detail for the agent just selected, on the data shown now (no new events, no new tick)."""
        if self._posted is not None:
            self._posted = dataclasses.replace(self._posted, events=[], detail=self._selected_detail())
            post(self._posted)

    def _selected_detail(self):
        selected = self.control.selected
        return from_events.detail(self.history, selected) if selected is not None else None

    def _complete(self) -> None:
        group, self._group = self._group, []
        self.history += group
        self.ready.append(self._data(group))

    def _data(self, events: list[Event]) -> TickData:
        world = self.world or {}
        tick = max(int(world.get("tick", 0)), events[-1].tick + 1 if events else 0)  # events of tick t: t+1 done
        self._shown_tick = max(self._shown_tick, tick)
        return TickData(scenario=self.scenario, model=self.model, tick=tick, clock=str(world.get("clock", "")),
                        events=list(events), rows=self._rows(),
                        metrics={**self.report.get("metrics", {}), "events seen": len(self.history)},
                        stats=dict(self.report.get("stats", {})), detail=self._selected_detail(), world=self.world,
                        history=list(self.trend))

    def _rows(self) -> list[AgentRow]:
        """The roster from the events seen, places corrected by the latest snapshot (a watcher may join late)."""
        rows = {r.name: r for r in roster(self.history)}
        world = self.world or {}
        where = {a: p for p, agents in world.get("places", {}).items() for a in agents}
        where.update({a: f"-> {dest}" for a, dest in world.get("travelling", {}).items()})
        for name, place in where.items():
            old = rows.get(name)
            rows[name] = AgentRow(name, place, old.action if old else "", "")
        return list(rows.values())

    def _show(self, post: Callable[[Any], None]) -> None:
        """Post the buffered ticks, unless the display is paused (a step shows one)."""
        c = self.control
        while self.ready:
            with c._wake:
                if c.paused and not c._steps:
                    c.idle.set()
                    return
                if c.paused:
                    c._steps -= 1
            c.idle.clear()
            self.ticks_run += 1
            self._posted = self.ready.popleft()
            post(self._posted)
        if c.paused:
            c.idle.set()


class Status(Message):
    """The connection's state changed: `text` for the header, None when all is well."""

    def __init__(self, text: str | None) -> None:
        super().__init__()
        self.text = text


class WatchApp(SwarmApp):
    """A SwarmApp on a `WatchSource`: the connection's status in the header; no inject, speed or seek."""

    status_text: str | None = None

    def _simulate(self) -> None:
        self.source.run(lambda data: self.post_message(Ticked(data)), lambda why: self.post_message(Finished(why)),
                        lambda text: self.post_message(Status(text)))

    def on_status(self, message: Status) -> None:
        self.status_text = message.text
        self._show_status()

    def _show_status(self) -> None:
        self.query_one(SimHeader).status = self.status_text or ("paused" if self.control.paused else "running")

    def action_toggle_pause(self) -> None:
        super().action_toggle_pause()
        self._show_status()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action not in ("inject", "take_control", "faster", "slower", "step") and action not in self.SEEK_ACTIONS
