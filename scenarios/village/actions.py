"""The village's own actions, beside the framework's Say, Move and Wait."""

from __future__ import annotations

from typing import Annotated

import msgspec

from swarm.agents.actions import Action, Person


class Work(Action, tag="work"):
    """Do your trade, at your own workplace (the mill, the market or the tavern)."""

    task: Annotated[str, msgspec.Meta(min_length=1, max_length=60, description="what you do")]


class Tell(Action, tag="tell"):
    """Tell someone here something in private: only they hear it."""

    to: Person
    news: Annotated[str, msgspec.Meta(min_length=1, max_length=160, description="what you tell them")]
