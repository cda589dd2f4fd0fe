"""The floor every scenario's metrics are compared against: a policy that picks a random action of the
tick's schema and fills its fields with names that exist in the world (or random words); a choice field
(`one_of`) takes one of the names the agent may use now, as a constrained model would.

Use it as `ScriptedModel(random_policy)`, or `swarm run SCENARIO --model random`.
"""

from __future__ import annotations

import random
import typing
from typing import Any

import msgspec

from swarm.agents import TurnKind
from swarm.agents.actions import Insight, PlanUpdate
from swarm.runtime.grammar import CHOICE_KEY

_WORDS = ("yes", "no", "maybe", "now", "later", "here", "there", "help", "wait", "good", "bad", "why")


def random_policy(turn) -> Any:
    rng = random.Random(turn.seed)
    kind = turn.request.kind
    if kind == TurnKind.REFLECT:
        return Insight(text=_words(rng))
    if kind == TurnKind.PLAN:
        return PlanUpdate(steps=[_words(rng)])
    options = typing.get_args(turn.request.schema) or (turn.request.schema,)
    action_type = rng.choice(options)
    return random_value(action_type, rng, _names(turn), turn.request.choices)


def random_value(struct_type: type, rng: random.Random, names: list[str],
                 choices: dict[str, tuple[str, ...]] | None = None) -> Any:
    """An instance of a msgspec Struct type with every field drawn at random (Literals from their values,
    choice fields from `choices`, other strings from `names`, numbers within their bounds)."""
    info = msgspec.inspect.type_info(struct_type)
    fields = {f.name: _draw(f.type, rng, names, choices or {}) for f in info.fields}
    return msgspec.convert(fields, struct_type)


def _draw(t: msgspec.inspect.Type, rng: random.Random, names: list[str], choices: dict) -> Any:
    if isinstance(t, msgspec.inspect.Metadata):
        kind = (t.extra_json_schema or {}).get(CHOICE_KEY)
        if kind in choices:
            return rng.choice(choices[kind]) if choices[kind] else None  # None: an optional field with no names
        return _draw(t.type, rng, names, choices)
    if isinstance(t, msgspec.inspect.UnionType):  # an optional field is left out half the time
        options = [o for o in t.types if not _nameless(o, choices)]
        return _draw(rng.choice(options), rng, names, choices)
    if isinstance(t, msgspec.inspect.LiteralType):
        return rng.choice(t.values)
    if isinstance(t, msgspec.inspect.StrType):
        text = rng.choice(names) if names and rng.random() < 0.8 else _words(rng)
        return text[: t.max_length] if t.max_length else text
    if isinstance(t, msgspec.inspect.BoolType):
        return rng.random() < 0.5
    if isinstance(t, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else 0)
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else lo + 10)
        value = rng.randint(int(lo), int(hi))
        return float(value) if isinstance(t, msgspec.inspect.FloatType) else value
    if isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.TupleType, msgspec.inspect.VarTupleType)):
        item = getattr(t, "item_type", None) or msgspec.inspect.StrType()
        lo = max(1, getattr(t, "min_length", None) or 0)
        hi = getattr(t, "max_length", None) or lo + 3  # a list length anywhere in the allowed range
        if _nameless(item, choices):
            return []
        return [_draw(item, rng, names, choices) for _ in range(rng.randint(lo, max(lo, hi)))]
    if isinstance(t, msgspec.inspect.NoneType):
        return None
    raise TypeError(f"random_policy cannot draw a value of {t}")


def _nameless(t: msgspec.inspect.Type, choices: dict) -> bool:
    """A choice field whose kind has no names now (it can only be left out)."""
    kind = (t.extra_json_schema or {}).get(CHOICE_KEY) if isinstance(t, msgspec.inspect.Metadata) else None
    return kind in choices and not choices[kind]


def _names(turn) -> list[str]:
    world = turn.world
    return [*world.positions, *world.graph.nodes, *world.things]


def _words(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 5)))

