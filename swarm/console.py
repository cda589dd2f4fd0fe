"""Plain terminal output for `swarm run` and `swarm replay`: progress, the report, events as text."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import IO, Any

from swarm.events import Event, Report


class Progress:
    """One status line rewritten in place on a terminal; without one (CI, a pipe) a line every tenth
    of the run, so logs stay short."""

    def __init__(self, total: int, stream: IO[str] | None = None, start: int = 0):
        # stderr as it is now, not as it was at import (a test's capture, since closed)
        self.total, self.stream, self.start = total, stream or sys.stderr, start  # start: ticks done before
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.events = 0
        self._every = max(1, total // 10)

    def __call__(self, sim, events: list[Event]) -> None:
        self.events += len(events)
        done = sim.counters["ticks"]
        elapsed = time.perf_counter() - self.t0
        line = (f"tick {done}/{self.total}  {sim.world.clock()}  {len(events)} events "
                f"({self.events} total)  {elapsed / max(done - self.start, 1):.2f} s/tick")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            if done >= self.total:
                self.stream.write("\n")
        elif done % self._every == 0 or done >= self.total:
            self.stream.write(line + "\n")
        self.stream.flush()


def format_report(report: Report) -> str:
    lines = [f"{report.ticks} ticks, {report.events} events in {report.seconds:.2f} s"]
    for key, value in report.metrics.items():
        lines.append(f"  {key}: {_fmt(value)}")
    if len(report.models) > 1:  # one model's counts are the totals above
        lines.append("  by model:")
        lines += [f"    {name} ({m['ref']}): {_fmt({k: v for k, v in m.items() if k != 'ref'})}"
                  for name, m in report.models.items()]
    return "\n".join(lines)


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """A report's history as CSV: a header row, then a row per tick. The columns are every name the rows
    use, in the order they first appear (`tick` first); a tick without a value for one leaves its cell empty."""
    columns = list(dict.fromkeys(name for row in history for name in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


def format_event(e: Event, minutes_per_tick: float = 1.0, start_minute: int = 8 * 60) -> str:
    m = int(start_minute + e.tick * minutes_per_tick)
    where = f" @{e.place}" if e.place else ""
    return f"[t{e.tick:>4} d{m // 1440 + 1} {m % 1440 // 60:02d}:{m % 60:02d}{where}] {e.text}"
