"""The agent roster: one row per agent, updated cell by cell (only what changed since last shown),
filtered by a text and sorted by a column.

A DataTable cannot hide rows, so the filter keeps only the matching rows in the table: a tick that
changes whether a few agents match adds or removes just those rows, and only a new filter (or a
tick that changes many) rebuilds the table. Either way the cursor stays on the agent it was on.
"""

from __future__ import annotations

import math

from textual.widgets import DataTable

from swarm.tui.data import AgentRow
from swarm.tui.messages import AgentSelected

COLUMNS = (("name", 14), ("place", 12), ("latency", 7), ("action", 30), ("step", 16))
REBUILD = 64  # more rows than this entering or leaving the filter in one update: rebuild instead


class Roster(DataTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[str, AgentRow] = {}  # every agent's latest row, shown or filtered out, in join order
        self._sorted: tuple[str, bool] | None = None  # (column, reverse) of the last sort
        self.filter = ""
        self._announced: str | None = None  # the agent the app was last told is selected

    def on_mount(self) -> None:
        for name, width in COLUMNS:
            self.add_column(name, width=width, key=name)

    def show(self, rows: list[AgentRow]) -> None:
        """Bring the table up to date with `rows`: add new agents, rewrite only the cells that changed."""
        entering, leaving, changed = [], [], []
        for row in rows:
            old = self._rows.get(row.name)
            if old == row:
                continue
            self._rows[row.name] = row
            shown, wanted = old is not None and self._matches(old), self._matches(row)
            if wanted and not shown:
                entering.append(row)
            elif shown and not wanted:
                leaving.append(row.name)
            elif shown:
                changed.append((old, row))
        if len(entering) + len(leaving) > REBUILD:
            self._rebuild()
            return
        for old, row in changed:
            for col, _ in COLUMNS[1:]:
                value = _cell(row, col)
                if _cell(old, col) != value:
                    self.update_cell(row.name, col, value, update_width=False)
        if leaving:
            with self._keeping_cursor():
                for name in leaving:
                    self.remove_row(name)
        for row in entering:  # at the bottom, as a sort is a snapshot (a busy roster does not jump)
            self.add_row(*(_cell(row, col) for col, _ in COLUMNS), key=row.name)

    def set_filter(self, text: str) -> None:
        """Show only the agents whose name, place or action contains `text` (any case); "" shows all."""
        text = text.strip()
        if text != self.filter:
            self.filter = text
            self._rebuild()

    def _matches(self, row: AgentRow) -> bool:
        needle = self.filter.lower()
        return not needle or needle in row.name.lower() or needle in row.place.lower() or needle in row.action.lower()

    def _rebuild(self) -> None:
        with self._keeping_cursor():
            self.clear()
            for row in self._rows.values():
                if self._matches(row):
                    self.add_row(*(_cell(row, col) for col, _ in COLUMNS), key=row.name)
            if self._sorted is not None:
                column, reverse = self._sorted
                self._sort(column, reverse)

    def _keeping_cursor(self):
        return _KeepCursor(self)

    @property
    def summary(self) -> str:
        """How many agents there are and, with a filter, how many match it (for a title)."""
        total = len(self._rows)
        return f"agents {total}" if not self.filter else f"agents {self.row_count} of {total} matching '{self.filter}'"

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
        with self._keeping_cursor():
            self._sort(column, reverse)

    def _sort(self, column: str, reverse: bool) -> None:
        rows = self._rows
        if column == "latency":  # numbers, agents with none last (first when reversed)
            self.sort("name", key=lambda name: _latency_key(rows[name].latency), reverse=reverse)
        else:
            self.sort("name", key=lambda name: str(getattr(rows[name], column)).lower(), reverse=reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(event.column_key.value)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value == self.selected:  # not a stale one, from rows that moved since
            self._announce(event.row_key.value)

    def _announce(self, agent: str | None) -> None:
        if agent != self._announced:
            self._announced = agent
            self.post_message(AgentSelected(agent))


class _KeepCursor:
    """Put the cursor back on the agent it was on after rows move (if that agent is filtered out, the
    agent the cursor lands on is the selection now)."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def __enter__(self) -> None:
        self.before = self.roster.selected

    def __exit__(self, *exc) -> None:
        roster = self.roster
        if self.before is not None and self.before in roster.rows:
            roster.move_cursor(row=roster.get_row_index(self.before), animate=False, scroll=True)
        roster._announce(roster.selected)


def _latency_key(seconds: float | None) -> float:
    return math.inf if seconds is None else seconds


def _cell(row: AgentRow, column: str) -> str:
    if column == "latency":
        if row.played:
            return "you"
        s = row.latency
        return "-" if s is None else f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    text = " ".join(getattr(row, column).split())
    return text if len(text) <= 120 else text[:119] + "…"
