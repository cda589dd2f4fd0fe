"""The runtime: tokens/s (with a sparkline of its history), prefix-cache hit rate, KV pool use."""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Sparkline, Static

HISTORY = 60


class RuntimePanel(Vertical):
    stats: reactive[dict[str, Any]] = reactive(dict)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._history: deque[float] = deque(maxlen=HISTORY)

    def compose(self) -> ComposeResult:
        yield Static("(no runtime stats: a scripted model)", id="runtime-numbers")
        yield Sparkline([], id="runtime-spark")

    def on_mount(self) -> None:
        self.query_one("#runtime-spark", Sparkline).display = False

    def watch_stats(self, stats: dict[str, Any]) -> None:
        if not self.is_mounted:
            return
        numbers, spark = self.query_one("#runtime-numbers", Static), self.query_one("#runtime-spark", Sparkline)
        spark.display = bool(stats)
        if not stats:
            numbers.update("(no runtime stats: a scripted model)")
            return
        tps = float(stats.get("recent_tokens_per_s", stats.get("tokens_per_s", 0.0)))
        self._history.append(tps)
        numbers.update(f"tokens/s {tps:.1f}\n"
                       f"prefix-cache hit {stats.get('prefix_cache_hit_rate', 0.0):.0%}\n"
                       f"KV pool use {stats.get('kv_pool_use', 0.0):.0%}\n"
                       f"batch {stats.get('last_batch_seqs', 0)} seqs")
        spark.data = list(self._history)
