"""The world: every place with who is there (the selected agent marked) and what lies there, and who is
on the road. Reads a `World.snapshot()`-shaped dict, whichever source it came from."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

NAMES_SHOWN = 30  # per place; a crowd of 1,000 is counted, not listed


class WorldView(Static):
    world: reactive[dict[str, Any] | None] = reactive(None, layout=True)
    selected: reactive[str | None] = reactive(None)

    def render(self) -> str:
        w = self.world
        if not w or not w.get("places"):
            return "(no world yet)"
        lying: dict[str, list[str]] = {}
        for thing, where in w.get("things", {}).items():
            lying.setdefault(where, []).append(thing)
        lines = []
        for place, agents in w["places"].items():
            here = self.selected in agents
            head = f"[b]{escape(place)}[/b] [dim]{len(agents)}[/dim]"
            lines.append(f"[reverse]>[/reverse] {head}" if here else f"  {head}")
            lines.append(f"    {self._names(agents)}" if agents else "    [dim](nobody)[/dim]")
            if place in lying:
                lines.append(f"    [dim]things:[/dim] {escape(', '.join(lying[place]))}")
        travelling = w.get("travelling", {})
        if travelling:
            lines += ["", f"  [b]on the road[/b] [dim]{len(travelling)}[/dim]"]
            shown = list(travelling.items())[:NAMES_SHOWN]
            lines += [f"    {self._label(a)} -> {escape(dest or '?')}" for a, dest in shown]
            if len(travelling) > len(shown):
                lines.append(f"    [dim]and {len(travelling) - len(shown)} more[/dim]")
        carried = [f"{escape(t)} ({escape(holder)})" for holder, things in lying.items() if holder not in w["places"]
                   for t in things]
        if carried:
            lines += ["", f"  [b]carried[/b] {', '.join(carried)}"]
        return "\n".join(lines)

    def _names(self, agents: list[str]) -> str:
        shown = agents[:NAMES_SHOWN]
        if self.selected in agents and self.selected not in shown:
            shown = [*shown[:-1], self.selected]
        text = ", ".join(self._label(a) for a in shown)
        return text + (f" [dim]and {len(agents) - len(shown)} more[/dim]" if len(agents) > len(shown) else "")

    def _label(self, agent: str) -> str:
        return f"[reverse]{escape(agent)}[/reverse]" if agent == self.selected else escape(agent)
