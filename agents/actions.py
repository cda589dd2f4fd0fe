"""What agents do: msgspec Structs in a tagged union, decoded from constrained JSON.

Every action is a subclass of `Action`, tagged in the `"type"` field
(`{"type":"say","text":"Hello"}`). Scenarios add their own:

    class Vote(Action, tag="vote"):
        target: Name

and pass `action_union(*BASE_ACTIONS, Vote)` to the engine as `schema=`. The
runtime compiles the union's JSON schema into a grammar, so every completion
decodes into one of the types. String fields carry a `max_length` so that a
constrained completion always ends within a bounded number of tokens.
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["BASE_ACTIONS", "Action", "Give", "Insight", "Move", "Name", "PlanUpdate", "Say", "Text", "Use", "Wait",
           "action_union"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]  # a person, place or item
Text = Annotated[str, msgspec.Meta(max_length=200)]  # something said or thought
StepText = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class Action(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    """The base of every action; subclass it with `tag="..."` (the class name is the tag otherwise)."""


class Say(Action, tag="say"):
    text: Text
    to: Name | None = None


class Move(Action, tag="move"):
    to: Name


class Give(Action, tag="give"):
    item: Name
    to: Name


class Use(Action, tag="use"):
    item: Name
    target: Name | None = None


class Wait(Action, tag="wait"):
    pass


BASE_ACTIONS: tuple[type[Action], ...] = (Say, Move, Give, Use, Wait)


class Insight(msgspec.Struct, frozen=True, kw_only=True):
    """A reflection: one higher-level conclusion drawn from recent memories."""

    text: Text


class PlanUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The next steps towards the agent's current goal, in order."""

    steps: Annotated[list[StepText], msgspec.Meta(min_length=1, max_length=4)]


def action_union(*types: type[Action]) -> Any:
    """The `typing.Union` of the given Action subclasses, for `schema=` (one type is returned as itself).

    Raises TypeError unless each is a tagged subclass of Action (not Action itself) and the tags are unique.
    """
    if not types:
        raise TypeError("action_union needs at least one Action subclass")
    tags: dict[str, type] = {}
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Action)) or t is Action:
            raise TypeError(f"{t!r} is not a subclass of swarm.agents.actions.Action")
        tag = _tag_of(t)
        if tag in tags:
            raise TypeError(f"{t.__name__} and {tags[tag].__name__} share the tag {tag!r}")
        tags[tag] = t
    return typing.Union[types]  # noqa: UP007 (the runtime form of `A | B | ...` over a tuple of types)


@functools.lru_cache(maxsize=4096)
def _tag_of(t: type) -> str:
    # msgspec.inspect walks every field: cached, because scenarios rebuild unions each tick for 1,000 agents
    config = t.__struct_config__
    if config.tag_field != "type" or not isinstance(config.tag, str):
        raise TypeError(f"{t.__name__} must be tagged in the 'type' field with a string tag, like Action")
    return config.tag


@functools.lru_cache(maxsize=8192)
def narrow(base: type[Action], field: str, choices: tuple[str, ...]) -> type[Action]:
    """`base` with `field` turned into a Literal of `choices` (same tag, same field order): an action whose
    target the grammar limits to what exists right now, e.g. a Vote over the living players. The same
    arguments give the same class, so schema unions and compiled grammars are reused."""
    if not choices:
        raise ValueError(f"narrow({base.__name__}, {field!r}) needs at least one choice")
    fields = [(name, Literal[tuple(choices)] if name == field else t) for name, t in _fields(base)]
    if field not in {name for name, _ in fields}:
        raise ValueError(f"{base.__name__} has no field {field!r}")
    return msgspec.defstruct(base.__name__, fields, bases=(Action,), tag=_tag_of(base), frozen=True, kw_only=True)


@functools.cache
def _fields(base: type) -> tuple:
    hints = typing.get_type_hints(base, include_extras=True)  # slow (evaluates annotations): cached
    return tuple((f.name, hints[f.name]) for f in msgspec.structs.fields(base))
