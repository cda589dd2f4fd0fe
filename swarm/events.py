"""What happens in a simulation: world events, messages into an agent's inbox, and the run's report.

Everything here is a msgspec Struct, so the same objects go to the event log,
over the bus (msgpack, or JSON for other clients) and into checkpoints.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing that happened, numbered in the order it happened (`seq` is unique within a run).

    `kind` is the action's tag for actions ("say", "move", ...) and a world word otherwise
    ("join", "arrive", "fail", "reflect", "plan", "inbox", or a scenario's own). `text` is
    how an observer reads it; `data` holds the structured fields (the action itself for
    actions). `audience` names who perceives it (None: everyone at its place but the actor,
    see `World.observers`; []: nobody). `importance` (0-10) is how much an observer's memory
    weighs it.
    """

    tick: int
    seq: int
    kind: str
    text: str
    actor: str | None = None
    place: str | None = None
    target: str | None = None
    data: dict[str, Any] = {}
    importance: float = 3.0
    audience: list[str] | None = None

    @property
    def heard_by(self) -> list[str] | None:
        """`audience`, or, for an event of a log written before it was a field, its `data["audience"]`."""
        return self.audience if self.audience is not None else self.data.get("audience")


_SENDER = re.compile(r"\w[\w .'-]{0,39}")


class InboxMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message an outside client publishes to `swarm/<sim>/agents/<id>/inbox`; the agent observes it
    on the next tick."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    sender: str = "outside"  # a name: 1-40 letters, digits, spaces and . ' - _, starting with a letter or digit
    importance: Annotated[float, msgspec.Meta(ge=0, le=10)] = 5.0

    def __post_init__(self):  # run when decoding too: a forged sender is a bad message, not a prompt line
        if not _SENDER.fullmatch(self.sender):
            raise ValueError(f"sender must be a name of 1-40 letters, digits, spaces and . ' - _ (starting with a "
                             f"letter or digit), got {self.sender[:60]!r}")


class Report(msgspec.Struct, kw_only=True):
    """What `Simulation.run` returns: ticks run, the scenario's and the loop's metrics, events recorded,
    and `history`: one row per tick the simulation ran (a resumed run's from its first tick), oldest first.

    A row is `{"tick": N, ...}` with `N` the tick's number as its events carry it (0 for the first). It
    holds the scenario's numeric metrics (ints, floats, bools) as they stood after that tick, and the
    loop's counts for that tick alone: `agents` (present), `events`, `turns`, `no_action`, `fails`, and
    the token counts the model keeps (`prompt_tokens`, `prompt_tokens_cached`, `prompt_tokens_computed`,
    `recomputed_tokens`, `generated_tokens`; see `Simulation.report`). Summing a count's column gives its
    total in `metrics`.

    `models`: each model of the simulation by name ("default" for its own `model=`, then those `add_model`
    added): its reference, the turns it decided and the token counts it keeps, over the simulation's ticks.
    """

    ticks: int
    events: int
    metrics: dict[str, Any]
    seconds: float
    history: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()
