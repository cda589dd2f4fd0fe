"""The software team's actions (Wait is the framework's; Say and Move are taken away): one per step of the work,
each for the role that takes it."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

import msgspec

from swarm.agents.actions import Action

Part = Literal["api", "ui", "database", "worker", "docs"]
PARTS: tuple[str, ...] = typing.get_args(Part)  # the parts a feature can need, in the canonical order
TaskId = Annotated[str, msgspec.Meta(min_length=1, max_length=8)]
Doc = Annotated[str, msgspec.Meta(min_length=1, max_length=240)]
Note = Annotated[str, msgspec.Meta(min_length=1, max_length=160)]


class WriteSpec(Action, tag="write_spec"):
    """The PM's spec of the requested feature: what it must do."""

    text: Annotated[Doc, msgspec.Meta(description="the spec")]


class Design(Action, tag="design"):
    """The architect's design: the components the feature is built from."""

    text: Annotated[Doc, msgspec.Meta(description="the design")]


class Breakdown(Action, tag="breakdown"):
    """The architect's task list: one task per part of the design."""

    parts: Annotated[list[Part], msgspec.Meta(min_length=1, max_length=5, description="one line per task")]


class Claim(Action, tag="claim"):
    """Take an open task to implement it."""

    task: Annotated[TaskId, msgspec.Meta(description="the task's id")]


class Implement(Action, tag="implement"):
    """Submit the change for a claimed task, with a change note for the reviewer."""

    task: Annotated[TaskId, msgspec.Meta(description="your task's id")]
    change: Annotated[Note, msgspec.Meta(description="what you changed")]


class Review(Action, tag="review"):
    """QA: approve a submitted change, or ask for changes."""

    task: Annotated[TaskId, msgspec.Meta(description="the task under review")]
    verdict: Literal["approve", "request_changes"]
    notes: Annotated[Note, msgspec.Meta(description="what is good or missing")]


class Release(Action, tag="release"):
    """The PM's release notes, once every task is approved."""

    notes: Annotated[Note, msgspec.Meta(description="what the release brings")]
