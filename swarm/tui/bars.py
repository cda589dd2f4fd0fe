"""Bar charts in text: one block character per value, from zero to the largest value."""

from __future__ import annotations

import math

BLOCKS = " ▁▂▃▄▅▆▇█"


def bars(values: list[float], width: int) -> str:
    """One block per value, scaled to the largest; more values than `width` are summed in groups."""
    width = max(1, width)
    if len(values) > width:
        group = -(-len(values) // width)
        values = [sum(values[i : i + group]) for i in range(0, len(values), group)]
    return _blocks(values)


def spark(history: list[float], width: int) -> str:
    """The newest `width` values of a history, oldest first, scaled to the largest of them."""
    return _blocks(list(history)[-max(1, width) :])


def trend(history: list[float], width: int) -> str:
    """As `spark`, for values that may be negative (then scaled from the lowest) or not finite (drawn as the
    floor): a metric's recent values."""
    values = [float(v) if math.isfinite(v) else 0.0 for v in list(history)[-max(1, width) :]]
    low = min(0.0, min(values, default=0.0))
    return _blocks([v - low for v in values])


def _blocks(values: list[float]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return BLOCKS[1] * len(values)  # a visible floor: there is a value, and it is zero
    steps = len(BLOCKS) - 1
    return "".join(BLOCKS[max(1, round(v / top * steps))] if v > 0 else BLOCKS[1] for v in values)
