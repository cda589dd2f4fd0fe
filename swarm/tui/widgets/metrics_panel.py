"""The scenario's metrics as they evolve: short values two to a line, long ones (counts by kind) on
their own lines, so a dozen metrics fit in a few lines."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

SHORT = 10  # values up to this many characters pair up


class MetricsPanel(Static):
    metrics: reactive[dict[str, Any]] = reactive(dict, layout=True)

    def render(self) -> str:
        if not self.metrics:
            return "(no metrics yet)"
        values = {k: _fmt(v) for k, v in self.metrics.items()}
        short = [(k, v) for k, v in values.items() if len(v) <= SHORT]
        half = max(10, (self.content_size.width - 1) // 2)
        cells = [f"{_key(k, half - len(v) - 1)} {v}".ljust(half) for k, v in short]
        lines = [" ".join(cells[i : i + 2]).rstrip() for i in range(0, len(cells), 2)]
        lines += [f"{escape(k)}: {v}" for k, v in values.items() if len(v) > SHORT]
        return "\n".join(lines)


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
