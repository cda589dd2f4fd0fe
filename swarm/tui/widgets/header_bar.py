"""The top line: scenario, sim clock, tick, model and the run's status."""

from __future__ import annotations

from rich.markup import escape
from textual.reactive import reactive
from textual.widgets import Static


class SimHeader(Static):
    scenario: reactive[str] = reactive("")
    clock: reactive[str] = reactive("")
    tick: reactive[int] = reactive(0)
    model: reactive[str] = reactive("")
    status: reactive[str] = reactive("running")

    def render(self) -> str:
        return (f"[b]{escape(self.scenario)}[/b]  {self.clock}  [b]tick {self.tick}[/b]  "
                f"model {escape(self.model)}  ({escape(self.status)})")
