"""Which model plays whom: the simulation's own `model=` is "default", `add_model`'s go by their names, a
persona names its model (`Persona(model=...)`), and `play`'s players decide under "player"."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swarm.agents import Agent, Persona
from swarm.scenario import scripted_model

DEFAULT = "default"  # the name of the simulation's own model= (for Persona(model=...) and the report)
PLAYER = "player"  # the name turns decided by `play`'s players go under (counters, demonstrations)


def named_model(model: Any, spec: str) -> Any:
    """`scripted` is the scenario's own policy, `random` the random-action floor; anything else as given."""
    if model == "scripted":
        return scripted_model(spec)
    if model == "random":
        from swarm.baselines import random_policy
        from swarm.model import ScriptedModel

        return ScriptedModel(random_policy, ref="random")
    return model


def model_name(persona: Persona) -> str:
    return persona.model or DEFAULT


def by_model(agents: Iterable[Agent]) -> dict[str, list[Agent]]:
    groups: dict[str, list[Agent]] = {}
    for agent in agents:
        groups.setdefault(model_name(agent.persona), []).append(agent)
    return groups
