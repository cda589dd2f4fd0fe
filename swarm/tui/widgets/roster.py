"""The agent roster: one row per agent, updated cell by cell (only what changed since last shown)."""

from __future__ import annotations

from textual.widgets import DataTable

from swarm.tui.messages import AgentSelected
from swarm.tui.source import AgentRow

COLUMNS = (("name", 14), ("place", 12), ("action", 38), ("step", 20))


class Roster(DataTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: dict[str, AgentRow] = {}
        self._sorted: tuple[str, bool] | None = None  # (column, reverse) of the last sort

    def on_mount(self) -> None:
        for name, width in COLUMNS:
            self.add_column(name, width=width, key=name)

    def show(self, rows: list[AgentRow]) -> None:
        """Bring the table up to date with `rows`: add new agents, rewrite only the cells that changed."""
        new = []
        for row in rows:
            old = self._shown.get(row.name)
            if old is None:
                new.append(row)
                continue
            for col, _ in COLUMNS[1:]:
                value = getattr(row, col)
                if getattr(old, col) != value:
                    self.update_cell(row.name, col, _cell(value), update_width=False)
            self._shown[row.name] = row
        for row in new:
            self.add_row(row.name, row.place, _cell(row.action), _cell(row.step), key=row.name)
            self._shown[row.name] = row

    @property
    def selected(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def sort_by(self, column: str) -> None:
        """Sort by `column`; sorting by the same column again reverses the order. Rows keep their place
        as cells update (a sort is a snapshot, as in a spreadsheet), so a busy roster does not jump."""
        reverse = self._sorted is not None and self._sorted == (column, False)
        self._sorted = (column, reverse)
        self.sort(column, key=lambda v: str(v).lower(), reverse=reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(event.column_key.value)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.post_message(AgentSelected(event.row_key.value))


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:119] + "…"
