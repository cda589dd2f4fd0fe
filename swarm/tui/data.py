"""What the sources hand the UI: plain, immutable data (never the simulation's own objects)."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from swarm.events import Event


@dataclass(frozen=True)
class AgentRow:
    """One roster line. `latency`: model seconds of the agent's last turn (None: scripted, or not yet);
    `played`: a person at the TUI plays the agent."""

    name: str
    place: str
    action: str
    step: str
    latency: float | None = None
    played: bool = False


@dataclass(frozen=True)
class AgentDetail:
    """What the detail pane shows for the selected agent. From an event log or a bus (`recorded`), the
    memories are what the agent did and saw, and there is no prompt."""

    name: str
    persona: dict[str, str]
    adapter: str | None
    memories: list[str]
    plan: list[tuple[str, str]]  # (status, text), in plan order
    prompt: str
    action: str
    place: str = ""
    latency: float | None = None
    recorded: bool = False


@dataclass(frozen=True)
class Partial:
    """The selected agent's act turn while the model writes it: the text so far (`done`: all of it)."""

    agent: str
    text: str
    done: bool = False


@dataclass(frozen=True)
class Asked:
    """A played agent's turn, waiting for the person: who, what kind (act, reflect, plan), at which tick, the
    messages its model would have been given, the turn's JSON schema (`wire_schema`) and its constraint (to
    check the answer). The UI puts the answer (the value, or a `NoAction`) on `reply`."""

    agent: str
    kind: str
    tick: int
    messages: list[dict[str, str]]
    schema: dict
    constraint: Any
    reply: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, compare=False, repr=False)


@dataclass(frozen=True)
class TickData:
    """One tick, as plain data: what every view needs. `world` is a `World.snapshot()`: {"places": {place:
    [agents]}, "travelling": {agent: destination}, "things": {thing: place or holder}} (None: unknown)."""

    scenario: str
    model: str
    tick: int  # ticks done so far
    clock: str
    events: list[Event]
    rows: list[AgentRow]
    metrics: dict[str, Any]
    stats: dict[str, Any]
    detail: AgentDetail | None = None
    reset: bool = False  # `events` is the whole history so far (a replay seeked): the views start over
    world: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the latest rows of Report.history, oldest first


TREND_TICKS = 120  # the history rows a source hands the UI: the metrics' sparklines draw at most this many


def model_label(name: str, device: str | None, more: dict[str, str | None] | None = None) -> str:
    """The header's model: its name, and the device it runs on when it has one; then the simulation's other
    models (`add_model`), by name."""
    label = f"{name} on {device}" if device else name
    return ", ".join([label, *(f"{n}: {ref or 'unnamed'}" for n, ref in (more or {}).items())])
