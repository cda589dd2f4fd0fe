"""Ticks from a recorded event log: play it back in the TUI, pause, step and seek.

The whole log is parsed up front (logs are small) and grouped by tick; position `p` shows the
events of the first `p` ticks, and the metrics of tick `p` with their history up to it (logs
written before the metrics were recorded show none). Seeking rebuilds every view from the events up to the new
position, so going back is as cheap as going forward. The selected agent's detail and the world
are rebuilt from the events too (`from_events`); logs from before joins carried personas and the
header the places still play, with less detail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm.events import Event
from swarm.recorder import read_records
from swarm.tui import from_events
from swarm.tui.data import TREND_TICKS, model_label
from swarm.tui.from_events import roster
from swarm.tui.source import Control, TickData

__all__ = ["ReplayControl", "ReplaySource", "roster"]


class ReplayControl(Control):
    """`Control` plus seeking: `seek(p)` jumps to position `p` (clamped to the log) from any thread."""

    _seek: int | None = None

    def seek(self, position: int) -> None:
        self._poke(_seek=position)

    def _next(self) -> str:
        """As `Control._next`, but a pending seek comes first (also while paused)."""
        with self._wake:
            while self._seek is None or self._stop:
                if self._stop or self._detail_wanted or not self.paused or self._steps:
                    return super()._next()
                self.idle.set()
                self._wake.wait()
            self.idle.clear()
            return "seek"

    def take_seek(self) -> int:
        with self._wake:
            target, self._seek = self._seek, None
        return target

    def _sleep(self, seconds: float) -> None:
        """Wait between ticks; a seek, a stop or a pause cuts it short."""
        deadline = time.monotonic() + seconds
        with self._wake:
            while self._seek is None and not self._stop and not self.paused:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(left)


class ReplaySource:
    """Ticks from the log at `path`; `read_records` errors (missing file, not a log) raise here, before any UI."""

    no_stats = "no runtime stats: an event log does not record them"

    def __init__(self, path: str | Path, control: ReplayControl | None = None):
        header, records = read_records(path)
        by_tick: dict[int, list[Event]] = {}
        rows: dict[int, dict[str, Any]] = {}
        for r in records:
            if isinstance(r, Event):
                by_tick.setdefault(r.tick, []).append(r)
            elif isinstance(r.get("tick"), int):
                rows[r["tick"]] = r
        self.total = max([*by_tick, *rows], default=-1) + 1
        self.ticks: list[list[Event]] = [by_tick.get(t, []) for t in range(self.total)]
        self.rows: list[dict[str, Any] | None] = [rows.get(t) for t in range(self.total)]  # the metrics per tick
        self.header = header
        seen = dict.fromkeys(e.place for tick in self.ticks for e in tick if e.place is not None)
        self.places: list[str] = list(header.get("places") or seen)  # older logs: the places events name
        self.control = control or ReplayControl()
        self.position = 0  # ticks shown
        self.ticks_run = 0
        self.error: BaseException | None = None
        self.started = False

    @property
    def scenario(self) -> str:
        return f"{self.header.get('sim') or 'sim'} replay of {self.total} ticks"

    @property
    def model(self) -> str:
        h = self.header
        return model_label(str(h.get("model") or "none"), h.get("device"), h.get("models"))

    def run(self, post: Callable[[Any], None], finished: Callable[[str], None]) -> None:
        """Play until stopped; at the end of the log pause (seeking still works) and say so once."""
        c = self.control
        self.started = True
        told = False  # the UI heard that the log is at its end
        try:
            if not c.stopped:
                post(self.snapshot(reset=True))
            while True:
                todo = c._next()
                if todo == "stop":
                    break
                if todo == "seek":
                    self.position = self.ticks_run = max(0, min(self.total, c.take_seek()))
                    told = False
                    post(self.snapshot(reset=True))
                    continue
                if todo == "detail":
                    post(self.snapshot(events=[]))
                    continue
                if self.position >= self.total:
                    if not told:
                        told = True
                        finished(f"end of the log ({self.total} ticks)")
                    c.pause(True)
                    continue
                self.position += 1
                self.ticks_run = self.position
                post(self.snapshot())
                c._sleep(c.delay)
        except Exception as e:  # shown in the UI
            self.error = e
            finished(f"error: {type(e).__name__}: {e}")
        finally:
            c.done.set()
            c.idle.set()

    def snapshot(self, reset: bool = False, events: list[Event] | None = None) -> TickData:
        """The views at the current position: with `reset`, the events of every tick so far (for a seek);
        `events` overrides the events to add (none, for fresh detail of another agent)."""
        p = self.position
        shown = [e for tick in self.ticks[:p] for e in tick]
        if events is None:
            events = shown if reset else (self.ticks[p - 1] if p else [])
        m = int(self.header.get("start_minute", 8 * 60) + p * self.header.get("minutes_per_tick", 1.0))
        clock = f"day {m // 1440 + 1}, {m % 1440 // 60:02d}:{m % 60:02d}"
        rows = roster(shown)
        selected = self.control.selected
        history = [r for r in self.rows[max(0, p - TREND_TICKS) : p] if r is not None]
        metrics = {k: v for k, v in history[-1].items() if k != "tick"} if history else {}
        return TickData(scenario=self.scenario, model=self.model, tick=p, clock=clock, events=list(events),
                        rows=rows, metrics={"replay": f"tick {p} of {self.total}", **metrics}, stats={}, reset=reset,
                        detail=from_events.detail(shown, selected) if selected is not None else None,
                        world=from_events.world(self.places, rows), history=history)
