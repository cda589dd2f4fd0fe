"""The event log: the newest events, filtered by a substring (case-insensitive)."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import RichLog

from swarm.events import Event

KEPT = 5000  # events kept for re-filtering
WRITTEN = 200  # at most this many lines written per update (the rest would scroll past unseen anyway)


class EventLog(RichLog):
    filter: reactive[str] = reactive("")

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=2000, wrap=False, markup=False, **kwargs)
        self._kept: deque[str] = deque(maxlen=KEPT)

    def add(self, events: list[Event]) -> None:
        lines = [f"{e.tick:>5} {e.kind:<8} {e.text}" for e in events]
        self._kept.extend(lines)
        self._write(lines)

    def reset(self) -> None:
        """Forget every line (a replay seeking backwards rebuilds the log from the start)."""
        self.clear()
        self._kept.clear()

    def watch_filter(self) -> None:
        self.clear()
        self._write(list(self._kept))

    def _write(self, lines: list[str]) -> None:
        needle = self.filter.lower()
        shown = [line for line in lines if needle in line.lower()] if needle else lines
        if shown:  # one renderable: far cheaper than a write per line
            self.write(Text("\n".join(shown[-WRITTEN:]), no_wrap=True, overflow="ellipsis"))

    @property
    def shown(self) -> list[str]:
        """The lines on screen now (for tests and copying)."""
        return [strip.text for strip in self.lines]
