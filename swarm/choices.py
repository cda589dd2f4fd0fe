"""What an agent may do this tick: its action types, with every choice field narrowed to the names valid now.

An action field typed `one_of(kind)` (`Person`, `Place`, `Item`, `Thing`, or a scenario's own kind) takes
only the names of that kind the agent can use this tick: the world gives people here, other places, what
the agent carries and what lies here; a scenario gives its own kinds with `@sim.choices`. The engine
compiles the narrowed schema into the grammar, so a model cannot write a name that does not fit. An action
whose required field has no name to take (Give when carrying nothing) is left out for this tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from swarm.agents.actions import action_union, all_kinds, describe_actions, required_kinds, tag_of
from swarm.scenario import ScenarioError

WORLD_KINDS = ("person", "place", "item", "thing")
LISTED = 12  # names of a scenario's own kind shown in the prompt (the grammar takes them all)


@dataclass(frozen=True)
class Offer:
    """One agent's act turn this tick: the union it answers with, the names its choice fields may take
    (None: the union has no choice fields), and a line for the prompt when it may do less than the system
    message describes (None otherwise)."""

    schema: Any
    choices: dict[str, tuple[str, ...]] | None
    options: str | None


class Menu:
    """Builds `Offer`s, caching what depends only on the action types (unions, kinds, descriptions)."""

    def __init__(self):
        self._unions: dict[tuple[type, ...], Any] = {}
        self._kinds: dict[tuple[type, ...], tuple[str, ...]] = {}
        self._described: dict[tuple[type, ...], tuple[str, frozenset[str]]] = {}

    def describe(self, types: Iterable[type]) -> str:
        """The system message's action section for the simulation's action types."""
        return self._description(tuple(types))[0]

    def offer(self, sim: Any, agent: Any, types: tuple[type, ...], described: tuple[type, ...],
              hook: Callable[[Any, Any], dict[str, Iterable[str]]] | None) -> Offer:
        """`types`: what the agent may take this tick (`@sim.actions_for`, else `described`: the simulation's
        action types, which the system message lists)."""
        kinds = self._kinds.get(types)
        if kinds is None:
            kinds = self._kinds[types] = tuple(sorted(set().union(*(all_kinds(t) for t in types))))
        if not kinds:
            return Offer(self.union(types), None, self._options(types, described, {}))
        choices = _choices(sim, agent, kinds, hook)
        usable = tuple(t for t in types if all(choices[k] for k in required_kinds(t)))
        if not usable:
            missing = sorted({k for t in types for k in required_kinds(t) if not choices[k]})
            raise ScenarioError(f"{agent.id} can take none of its actions at tick {sim.world.tick}: there is no "
                                f"{' or '.join(missing)} to name; offer Wait, or an action without such a field")
        return Offer(self.union(usable), choices, self._options(usable, described, choices))

    def union(self, types: tuple[type, ...]) -> Any:
        schema = self._unions.get(types)
        if schema is None:
            if len(self._unions) >= 256:  # types rebuilt every phase would pile up
                self._unions.clear()
            schema = self._unions[types] = action_union(*types)
        return schema

    def _description(self, types: tuple[type, ...]) -> tuple[str, frozenset[str]]:
        found = self._described.get(types)
        if found is None:
            found = self._described[types] = (describe_actions(types), frozenset(map(tag_of, types)))
        return found

    def _options(self, usable: tuple[type, ...], described: tuple[type, ...],
                 choices: dict[str, tuple[str, ...]]) -> str | None:
        """What the act prompt says of this turn's choices: the actions possible now when they are not all the
        system message lists, and the names of the scenario's own kinds (the world's are in the situation)."""
        tags = [tag_of(t) for t in usable]
        parts = []
        if set(tags) != self._description(described)[1]:
            parts.append("You can now: " + ", ".join(tags) + ".")
        for kind, names in choices.items():
            if kind not in WORLD_KINDS and names:  # a kind with no names is in no action offered
                more = f", ... ({len(names) - LISTED} more)" if len(names) > LISTED else ""
                parts.append(f"Choices of {kind}: {', '.join(names[:LISTED])}{more}.")
        return " ".join(parts) or None


def _choices(sim: Any, agent: Any, kinds: tuple[str, ...],
             hook: Callable[[Any, Any], dict[str, Iterable[str]]] | None) -> dict[str, tuple[str, ...]]:
    """The names each kind may take for `agent` now: the scenario's `@sim.choices` first, then the world's."""
    given = hook(sim, agent) if hook is not None else None
    if given is not None and not isinstance(given, dict):
        raise ScenarioError(f"@sim.choices must return a dict of kind -> names, got {type(given).__name__}")
    given = given or {}
    world = sim.world.choices_for(agent.id, [k for k in kinds if k in WORLD_KINDS and k not in given])
    out = {}
    for kind in kinds:
        if kind in given:
            names = given[kind]
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
                raise ScenarioError(f"@sim.choices gave {kind!r} {names!r}: a list of non-empty names is needed")
        elif kind in world:
            names = world[kind]
        else:
            raise ScenarioError(f"the actions of {agent.id} name a {kind!r} (one_of({kind!r})), and nothing gives "
                                f"its names: return them from a @sim.choices function, e.g. {{{kind!r}: [...]}}")
        out[kind] = tuple(names)
    return out
