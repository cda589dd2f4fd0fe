"""The runtime: tokens/s and batch size, each with a sparkline of the runtime's per-step history, prefix-cache hit
rate, KV pool use, and expert load per layer. A source without stats (a scripted model, a replay, a
watch) says why instead."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from swarm.tui.bars import spark
from swarm.tui.widgets.expert_load import ExpertLoad

LABEL = 18  # columns before a sparkline


class RuntimePanel(Vertical):
    stats: reactive[dict[str, Any]] = reactive(dict)
    note: reactive[str] = reactive("no runtime stats")  # shown while there are none

    def compose(self) -> ComposeResult:
        yield Static("", id="runtime-numbers")
        yield ExpertLoad(id="expert-load")

    def on_mount(self) -> None:
        self._show(self.stats)

    def watch_stats(self, stats: dict[str, Any]) -> None:
        if self.is_mounted:
            self._show(stats)

    def watch_note(self) -> None:
        if self.is_mounted and not self.stats:
            self._show(self.stats)

    def _show(self, stats: dict[str, Any]) -> None:
        numbers, experts = self.query_one("#runtime-numbers", Static), self.query_one(ExpertLoad)
        experts.display = bool(stats)
        if not stats:
            numbers.update(f"[dim]({self.note})[/dim]")
            return
        # both sparklines draw the runtime's own per-step history, so they show the same whatever updates the UI
        # coalesced (a history sampled per update drew one point more or fewer with the timing)
        tps = float(stats.get("recent_tokens_per_s", stats.get("tokens_per_s", 0.0)))
        steps = list(stats.get("recent_step_tokens_per_s", ()))
        batches = list(stats.get("recent_batch_seqs", ()))
        width = max(8, (numbers.content_size.width or 40) - LABEL)
        tokens = f"tokens/s {tps:>8.1f}"
        batch = f"batch {stats.get('last_batch_seqs', 0):>6} seqs"
        numbers.update(
            f"{tokens:<{LABEL}}[$accent]{spark(steps, width) if steps else ''}[/]\n"
            f"{batch:<{LABEL}}[$accent]{spark(batches, width) if batches else ''}[/]\n"
            f"prefix-cache hit {stats.get('prefix_cache_hit_rate', 0.0):.0%}  "
            f"KV pool {stats.get('kv_pool_use', 0.0):.0%}")
        experts.load = [list(row) for row in stats.get("expert_load", ())]
