"""The selected agent: persona, adapter, recent memories, plan with status, last prompt and its action."""

from __future__ import annotations

from rich.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

from swarm.tui.source import AgentDetail

MARKS = {"pending": "[ ]", "active": "[>]", "done": "[x]", "failed": "[!]"}


class AgentDetailPane(Static):
    detail: reactive[AgentDetail | None] = reactive(None, layout=True)

    def render(self) -> str:
        d = self.detail
        if d is None:
            return "(select an agent)"
        lines = [f"[b]{escape(d.name)}[/b]  adapter: {escape(d.adapter or 'base model')}"]
        lines += [f"{k}: {escape(v)}" for k, v in d.persona.items() if v]
        lines += ["", "[b]memories[/b]", *(escape(f"- {m}") for m in d.memories)]
        lines += ["", "[b]plan[/b]", *(escape(f"{MARKS.get(s, s)} {t}") for s, t in d.plan)]
        if not d.plan:
            lines.append("(none)")
        lines += ["", "[b]last prompt[/b]", escape(d.prompt or "(none yet)")]
        lines += ["", "[b]action[/b]", escape(d.action or "(none yet)")]
        return "\n".join(lines)
