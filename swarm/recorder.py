"""The event log: one JSON object per line, a header line first, appended and flushed every tick.

JSON lines because a log is read by people and by other tools (`jq`, pandas) and a
crash can cut only the last line, which `read_log` detects and skips with a warning.
Each tick writes its events, then its metrics: `{"metrics": {"tick": N, ...}}`, a row of
the run's history (`Report.history`, less the token counts). `read_log` gives the events,
`read_history` the rows, `read_records` both in the order written; logs from before the
rows were written (format 1) read the same, with no rows.
A simulation resumed from a checkpoint continues the same log from the byte offset
the checkpoint recorded; anything written after that offset (a run that went on
past its last save) is moved to a side file rather than lost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from swarm.events import Event

log = logging.getLogger("swarm.recorder")

LOG_FORMAT = 2  # 2: a metrics row after each tick's events
_METRICS = b'{"metrics":'  # how a metrics row starts (an event starts with its tick)


class _MetricsLine(msgspec.Struct):
    metrics: dict[str, Any]


class Recorder:
    def __init__(self, path: str | Path, header: dict, offset: int | None = None):
        """Start a new log at `path` (writing `header`), or with `offset` continue an existing one there."""
        self.path = Path(path)
        self._enc = msgspec.json.Encoder()
        if offset is None:
            if self.path.parent and not self.path.parent.is_dir():
                raise ValueError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")
            self._file = open(self.path, "wb")  # noqa: SIM115 (kept open for the run)
            self._file.write(self._enc.encode({"swarm_log": LOG_FORMAT, **header}) + b"\n")
        else:
            self._file = self._resume(offset)
        self.flush()

    def _resume(self, offset: int):
        if not self.path.is_file():
            raise ValueError(f"cannot continue the event log {self.path}: the file is gone")
        size = self.path.stat().st_size
        if size < offset:
            raise ValueError(f"the event log {self.path} is shorter ({size} bytes) than when the checkpoint "
                             f"was saved ({offset} bytes); it cannot be continued")
        f = open(self.path, "r+b")  # noqa: SIM115
        if size > offset:  # events recorded after the save: keep them aside, then continue from the save
            f.seek(offset)
            aside = self.path.with_name(f"{self.path.name}.after-{offset}")
            aside.write_bytes(f.read())
            log.warning("the event log went on past the checkpoint; %d bytes moved to %s", size - offset, aside)
            f.truncate(offset)
        f.seek(offset)
        return f

    def write(self, events: list[Event]) -> None:
        self._file.write(b"".join(self._enc.encode(e) + b"\n" for e in events))

    def write_metrics(self, row: dict[str, Any]) -> None:
        """A tick's row of the history, after its events."""
        self._file.write(self._enc.encode(_MetricsLine(row)) + b"\n")

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


def read_log(path: str | Path) -> tuple[dict, Iterator[Event]]:
    """The header and an iterator over the events of a log written by `Recorder`."""
    header, records = read_records(path)
    return header, (r for r in records if isinstance(r, Event))


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The metrics rows of a log written by `Recorder`, one per tick, oldest first (none in a format-1 log)."""
    return [r for r in read_records(path)[1] if not isinstance(r, Event)]


def read_records(path: str | Path) -> tuple[dict, Iterator[Event | dict[str, Any]]]:
    """The header and an iterator over what the log holds after it, in order: Events, and each tick's
    metrics row (a dict) after the tick's events."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no event log at {path}")
    f = open(path, "rb")  # noqa: SIM115 (closed by the iterator)
    first = f.readline()
    try:
        header = msgspec.json.decode(first)
    except msgspec.DecodeError:
        header = None
    if not isinstance(header, dict) or "swarm_log" not in header:
        f.close()
        raise ValueError(f"{path} is not a swarm event log (its first line is not a swarm_log header)")
    if not isinstance(header["swarm_log"], int) or header["swarm_log"] > LOG_FORMAT:
        f.close()
        raise ValueError(f"{path} was written by a newer swarm (log format {header['swarm_log']!r}; this one reads "
                         f"formats 1 to {LOG_FORMAT}): upgrade swarm to read it")

    def records() -> Iterator[Event | dict[str, Any]]:
        events, rows = msgspec.json.Decoder(Event), msgspec.json.Decoder(_MetricsLine)
        with f:
            for n, line in enumerate(f, start=2):
                try:
                    yield rows.decode(line).metrics if line.startswith(_METRICS) else events.decode(line)
                except msgspec.DecodeError as e:
                    if not line.endswith(b"\n"):  # a write cut short by a crash: the only line that can be
                        log.warning("%s: the last line is incomplete (the run stopped mid-write); skipped", path)
                        return
                    raise ValueError(f"{path}, line {n}: not an event or a metrics row ({e})") from None

    return header, records()
