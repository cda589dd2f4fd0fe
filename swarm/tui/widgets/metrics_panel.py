"""The scenario's metrics, key = value, as they evolve."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static


class MetricsPanel(Static):
    metrics: reactive[dict[str, Any]] = reactive(dict, layout=True)

    def render(self) -> str:
        if not self.metrics:
            return "(no metrics yet)"
        return "\n".join(f"{k}: {_fmt(v)}" for k, v in self.metrics.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    return str(v)
