"""Messages that go up: from the simulation worker and the widgets to the app."""

from __future__ import annotations

from textual.message import Message

from swarm.tui.source import Asked, TickData


class Ticked(Message):
    """The worker finished a tick (or answered a request for fresh detail) with this data."""

    def __init__(self, data: TickData) -> None:
        super().__init__()
        self.data = data


class Finished(Message):
    """The run ended (its ticks are done, or it raised): `why` says which."""

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why


class Streamed(Message):
    """The selected agent's action being written has new text: the app takes the newest from the source
    (`LiveSource.take_partial`), so however fast the model writes, one notice at a time is on its way."""


class AgentSelected(Message):
    """The roster's cursor moved to another agent."""

    def __init__(self, agent: str | None) -> None:
        super().__init__()
        self.agent = agent


class TurnAsked(Message):
    """A played agent's turn waits for the person's answer (see `LiveSource`)."""

    def __init__(self, asked: Asked) -> None:
        super().__init__()
        self.asked = asked
