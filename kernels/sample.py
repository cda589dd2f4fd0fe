"""Greedy token picks: the torch reference of the `argmax` op (the engine's greedy rows, one call per step)."""

from __future__ import annotations

import torch


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits [R, V] -> [R] int64: each row's largest entry, the first of equals (a NaN counts as largest)."""
    return logits.argmax(-1)
