"""The scenario's metrics as they evolve. A metric the run's history keeps per tick (the scenario's
numbers, the loop's counts) gets a line of its own: its value and a sparkline of its recent ticks
(the loop's counts per tick, so `turns` shows the turns of each tick beside their total). Other short
values go two to a line, long ones (counts by kind) on their own lines."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

from swarm.tui.bars import trend

SHORT = 10  # values up to this many characters pair up
NAME = 18  # columns for a trend line's name
VALUE = 8  # and for its value


class MetricsPanel(Static):
    metrics: reactive[dict[str, Any]] = reactive(dict, layout=True)
    history: reactive[list[dict[str, Any]]] = reactive(list, layout=True)  # recent rows, oldest first

    def render(self) -> str:
        if not self.metrics:
            return "(no metrics yet)"
        columns = _columns(self.history)
        values = {k: _fmt(v) for k, v in self.metrics.items()}
        latest = self.history[-1] if self.history else {}
        # counts the history keeps that the metrics do not (events, fails per tick): their latest tick's value
        values.update({k: _fmt(latest[k]) for k in columns if k not in values and k in latest})
        width = self.content_size.width
        room = max(4, width - NAME - VALUE - 2)
        lines = [f"{_key(k, NAME)} {v:>{VALUE}} [$accent]{trend(columns[k], room)}[/]"
                 for k, v in values.items() if k in columns]
        short = [(k, v) for k, v in values.items() if k not in columns and len(v) <= SHORT]
        half = max(10, (width - 1) // 2)
        cells = [f"{_key(k, half - len(v) - 1)} {v}".ljust(half) for k, v in short]
        lines += [" ".join(cells[i : i + 2]).rstrip() for i in range(0, len(cells), 2)]
        lines += [f"{escape(k)}: {v}" for k, v in values.items() if k not in columns and len(v) > SHORT]
        return "\n".join(lines)


def _columns(history: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each numeric column of the rows (but the tick), its values oldest first (a row without it skipped)."""
    columns: dict[str, list[float]] = {}
    for row in history:
        for k, v in row.items():
            if k != "tick" and isinstance(v, (int, float)):
                columns.setdefault(k, []).append(float(v))
    return columns


def _key(name: str, room: int) -> str:
    name = name.replace("_", " ")
    name = name if len(name) <= room else name[: max(1, room - 1)] + "…"
    return f"[dim]{escape(name)}[/dim]" + " " * max(0, room - len(name))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    return str(v)
