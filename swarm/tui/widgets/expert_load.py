"""Expert load per MoE layer: one row of bars per layer, a bar per expert (its share of the layer's
routed tokens, relative to the busiest expert), and how uneven the layer is (busiest / mean)."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from swarm.tui.bars import bars

LAYERS_SHOWN = 12


class ExpertLoad(Static):
    load: reactive[list[list[int]]] = reactive(list, layout=True)  # [layer][expert] tokens routed, cumulative

    def watch_load(self, load: list[list[int]]) -> None:
        # its height, set outright: a panel sized to its content then always has room for every row
        self.styles.height = 1 + min(len(load), LAYERS_SHOWN) + (len(load) > LAYERS_SHOWN) if load else 1

    def render(self) -> str:
        load = self.load
        if not load or not any(any(row) for row in load):
            return "[dim]expert load: no tokens routed yet[/dim]"
        width = max(8, self.content_size.width - 10)  # "L12 " before the bars, " 1.8x" after
        lines = ["expert load [dim](per layer; busiest/mean)[/dim]"]
        for i, row in enumerate(load[:LAYERS_SHOWN]):
            mean = sum(row) / len(row) if row else 0
            ratio = f"{max(row) / mean:.1f}x" if mean else "-"
            lines.append(f"L{i:<3}{bars(row, width)} [dim]{ratio}[/dim]")
        if len(load) > LAYERS_SHOWN:
            lines.append(f"[dim]and {len(load) - LAYERS_SHOWN} more layers[/dim]")
        return "\n".join(lines)
