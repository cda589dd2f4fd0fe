"""What agents do: msgspec Structs in a tagged union, decoded from constrained JSON.

Every action is a subclass of `Action`, tagged in the `"type"` field
(`{"type":"say","text":"Hello"}`). Scenarios add their own:

    class Vote(Action, tag="vote"):
        target: Name

and pass `action_union(*BASE_ACTIONS, Vote)` to the engine as `schema=`. The
runtime compiles the union's JSON schema into a grammar, so every completion
decodes into one of the types. String fields carry a `max_length` so that a
constrained completion always ends within a bounded number of tokens.

Fields that name a person, a place or a thing are typed with `one_of(kind)`
(`Person`, `Place`, `Item`, `Thing`, or a scenario's own kind): each tick the
simulation narrows them, per agent, to the names valid now (people here, other
places, what the agent carries), so a model cannot name anyone or anything
else. The docstring of each action and the `description` of each field are
what the model reads about them (`describe_actions`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from swarm.runtime.grammar import CHOICE_KEY, choice_kinds, closed_json_schema

__all__ = ["BASE_ACTIONS", "Action", "Give", "Insight", "Item", "Move", "Name", "Person", "Place", "PlanUpdate", "Say",
           "Text", "Thing", "Use", "Wait", "action_union", "all_kinds", "describe_actions", "one_of", "required_kinds",
           "tag_of"]

NAME_LENGTH = 40


def one_of(kind: str, description: str | None = None, max_length: int = NAME_LENGTH) -> Any:
    """A string field naming one of the `kind` names valid for the acting agent now ("person", "place", "item",
    "thing", or a scenario's own kind with names from `@sim.choices`): the grammar offers only those."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"a choice kind is a plain identifier like 'person', got {kind!r}")
    return Annotated[str, msgspec.Meta(min_length=1, max_length=max_length, description=description,
                                       extra_json_schema={CHOICE_KEY: kind})]


Person = one_of("person", "someone here")
Place = one_of("place", "a place to go to")
Item = one_of("item", "something you carry")
Thing = one_of("thing", "something you carry or that is here")
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_LENGTH)]  # a free name (not narrowed)
Text = Annotated[str, msgspec.Meta(max_length=200)]  # something said or thought
StepText = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class Action(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    """The base of every action; subclass it with `tag="..."` (the class name is the tag otherwise).

    A tick's actions happen at once. `departs`: the action takes its actor away (set it on a scenario's own
    travel actions); departures resolve after the tick's other actions, so whoever speaks to, trades with or
    follows someone who leaves this tick finds them still there, and the leaver hears what was said."""

    departs: ClassVar[bool] = False


class Say(Action, tag="say"):
    """Say something aloud: everyone here hears it."""

    text: Annotated[Text, msgspec.Meta(description="what you say")]
    to: Annotated[Person | None, msgspec.Meta(description="whom you speak to, if anyone")] = None


class Move(Action, tag="move"):
    """Go to another place; the way takes time."""

    departs: ClassVar[bool] = True
    to: Place


class Give(Action, tag="give"):
    """Hand something you carry to someone here."""

    item: Item
    to: Person


class Use(Action, tag="use"):
    """Use something at hand."""

    item: Thing
    target: Annotated[Name | None, msgspec.Meta(description="whom or what you use it on, if anything")] = None


class Wait(Action, tag="wait"):
    """Do nothing this turn."""


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
        tag = tag_of(t)
        if tag in tags:
            raise TypeError(f"{t.__name__} and {tags[tag].__name__} share the tag {tag!r}")
        tags[tag] = t
    return typing.Union[types]  # noqa: UP007 (the runtime form of `A | B | ...` over a tuple of types)


def describe_actions(types: typing.Iterable[type]) -> str:
    """What the model reads about `types`: a line per action with its tag and fields (`to?` is optional), what
    it does (the docstring's first paragraph) and what each field holds (its `description`)."""
    lines = ['Actions (answer with exactly one, as JSON: {"type": the action, then its fields}):']
    lines += [_describe(t) for t in types]
    return "\n".join(lines)


@functools.lru_cache(maxsize=1024)
def _describe(t: type) -> str:
    schema = closed_json_schema(t)
    node = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema
    required = set(node.get("required", ()))
    fields = [(name, sub) for name, sub in node.get("properties", {}).items() if name != "type"]
    signature = ", ".join(name + ("" if name in required else "?") for name, _ in fields)
    doc = " ".join(inspect.cleandoc(t.__doc__ or "").split("\n\n", 1)[0].split())
    about = "; ".join(f"{name}: {_field_description(sub)}" for name, sub in fields if _field_description(sub))
    return f"- {tag_of(t)}({signature})" + (f": {doc}" if doc else "") + (f" ({about})" if about else "")


def _field_description(node: dict) -> str:
    """A field's own description, else the first one inside it (an optional choice keeps its kind's)."""
    if node.get("description"):
        return node["description"]
    for sub in node.get("anyOf", ()):
        if isinstance(sub, dict) and sub.get("description"):
            return sub["description"]
    return ""


@functools.lru_cache(maxsize=4096)
def required_kinds(t: Any) -> frozenset[str]:
    """The choice kinds an action (or union) cannot be written without: with no names of one of them, the
    simulation leaves the action out of the agent's choices this tick."""
    return choice_kinds(closed_json_schema(t))[1]


@functools.lru_cache(maxsize=4096)
def all_kinds(t: Any) -> frozenset[str]:
    """Every choice kind in an action type or union."""
    return choice_kinds(closed_json_schema(t))[0]


@functools.lru_cache(maxsize=4096)
def tag_of(t: type) -> str:
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
    return msgspec.defstruct(base.__name__, fields, bases=(Action,), tag=tag_of(base), frozen=True, kw_only=True)


@functools.cache
def _fields(base: type) -> tuple:
    hints = typing.get_type_hints(base, include_extras=True)  # slow (evaluates annotations): cached
    return tuple((f.name, hints[f.name]) for f in msgspec.structs.fields(base))
