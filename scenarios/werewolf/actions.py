"""The werewolf game's own actions, beside the framework's Say and Wait.

Each has a free `target`: each phase narrows `target` to a Literal of the players it may name (see `offered`
in the package). Handlers are keyed by tag, so they serve every narrowed type."""

from __future__ import annotations

from typing import Annotated

import msgspec

from swarm.agents.actions import Action, Name

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]


class Kill(Action, tag="kill"):
    """Werewolves, at night: the villager you want dead."""

    target: Annotated[Name, msgspec.Meta(description="a living villager")]


class Inspect(Action, tag="inspect"):
    """The seer, at night: learn whether a player is a werewolf."""

    target: Annotated[Name, msgspec.Meta(description="a living player")]


class Accuse(Action, tag="accuse"):
    """By day: name a suspect, and say why."""

    target: Annotated[Name, msgspec.Meta(description="a living player")]
    reason: Annotated[Reason, msgspec.Meta(description="why you suspect them")]


class Vote(Action, tag="vote"):
    """At the vote: the player you want hanged."""

    target: Annotated[Name, msgspec.Meta(description="a living player")]
