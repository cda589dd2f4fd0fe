"""The selected agent: persona, adapter, its last action and, while the model writes the next one, that
action as it streams in; then recent memories, plan with status, and the last prompt."""

from __future__ import annotations

from rich.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

from swarm.tui.data import AgentDetail, Partial

MARKS = {"pending": "[ ]", "active": "[>]", "done": "[x]", "failed": "[!]"}


class AgentDetailPane(Static):
    detail: reactive[AgentDetail | None] = reactive(None, layout=True)
    partial: reactive[Partial | None] = reactive(None, layout=True)

    def render(self) -> str:
        d = self.detail
        if d is None:
            return "(select an agent)"
        where = f"  at {escape(d.place)}" if d.place else ""
        took = f"  [dim]last turn[/dim] {d.latency:.2f} s" if d.latency is not None else ""
        lines = [f"[b]{escape(d.name)}[/b]{where}{took}", f"adapter: {escape(d.adapter or 'base model')}"]
        lines += [f"{k}: {escape(v)}" for k, v in d.persona.items() if v]
        lines += ["", "[b]action[/b]", escape(d.action or "(none yet)")]
        p = self.partial
        if p is not None and p.agent == d.name:  # this tick's turn, while the model writes it
            state = "written; the tick goes on" if p.done else "the model is writing it"
            lines += [f"[b]next action[/b] [dim]({state})[/dim]", escape(p.text) + ("" if p.done else "▌")]
        lines += ["", "[b]seen and done (from the log)[/b]" if d.recorded else "[b]memories[/b]"]
        lines += [escape(f"- {m}") for m in d.memories] or ["(none)"]
        lines += ["", "[b]plan[/b]", *(escape(f"{MARKS.get(s, s)} {t}") for s, t in d.plan)]
        if not d.plan:
            lines.append("(none)")
        prompt = "[dim](prompts are not recorded)[/dim]" if d.recorded else escape(d.prompt or "(none yet)")
        lines += ["", "[b]last prompt[/b]", prompt]
        return "\n".join(lines)
