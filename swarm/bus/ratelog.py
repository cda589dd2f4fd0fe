"""Warnings about what outside clients send, rate limited: a client that floods the bus with bad messages
must not flood the log too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    """One kind of warning (payloads that do not decode, messages for unknown agents, ...), rate limited.

    After a quiet spell of `every` seconds the next `burst` warnings are logged in full, as WARNING; while
    they keep coming, the rest go to DEBUG and are counted, and one WARNING line every `every` seconds says
    how many were not logged and quotes the latest. So a flood costs `burst` lines, then one line per
    `every` seconds; `count` has them all.
    """

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = 5, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or every <= 0:
            raise ValueError(f"burst must be >= 1 and every > 0, got {burst} and {every}")
        self.logger, self.what, self.burst, self.every = logger, what, burst, every
        self.count = 0  # every warning, logged or not
        self._clock = clock
        self._last = self._since = -float("inf")  # the latest warning; the start of the current count
        self._left = 0  # warnings still to log in full
        self._quiet = 0  # counted since the last line
        self._latest: tuple[str, tuple[Any, ...]] = ("", ())

    def warn(self, fmt: str, *args: Any) -> None:
        """`logger.warning(fmt, *args)`, unless too many came lately (then counted, and logged at DEBUG)."""
        now = self._clock()
        self.count += 1
        if now - self._last >= self.every:  # news again after a quiet spell
            self.flush()
            self._left, self._since = self.burst, now
        self._last = now
        if self._left:
            self._left -= 1
            self.logger.warning(fmt, *args)
            return
        self._quiet += 1
        self._latest = fmt, args
        self.logger.debug(fmt, *args)
        if now - self._since >= self.every:
            self.flush()

    def flush(self) -> None:
        """Log the count of warnings not logged yet, if any (e.g. when the component closes)."""
        if self._quiet:
            fmt, args = self._latest
            self.logger.warning("%d more %s in the last %.0f s (not logged one by one); the latest: %s",
                                self._quiet, self.what, self._clock() - self._since, fmt % args if args else fmt)
        self._quiet = 0
        self._since = self._clock()
