"""The support desk's own actions, beside the framework's Wait: Route, Answer and Escalate, each on one ticket."""

from __future__ import annotations

from typing import Annotated

import msgspec

from swarm.agents.actions import Action
from swarm.scenarios.support_desk.tickets import Category, Priority

TicketId = Annotated[str, msgspec.Meta(min_length=1, max_length=12)]


class Route(Action, tag="route"):
    """Send a ticket to a queue, with the priority it deserves and a note for the specialist."""

    ticket: Annotated[TicketId, msgspec.Meta(description="the ticket's id")]
    # the decision, then the note that explains it: with the note first, swarm-tiny copied a wrong cue word
    # and then followed it to the wrong queue (its answers showed it); a decision is not derailed that way
    queue: Annotated[Category, msgspec.Meta(description="the desk that should handle it")]
    priority: Priority
    note: Annotated[str, msgspec.Meta(max_length=100, description="for the specialist")]


class Answer(Action, tag="answer"):
    """Reply to the customer; this resolves the ticket if it was the right desk to answer it."""

    ticket: Annotated[TicketId, msgspec.Meta(description="the ticket's id")]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=160, description="your reply")]


class Escalate(Action, tag="escalate"):
    """Hand the ticket to a senior, saying why."""

    ticket: Annotated[TicketId, msgspec.Meta(description="the ticket's id")]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=100, description="why a senior must take it")]

