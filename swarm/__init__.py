"""swarm: multi-agent simulation on small language models.

`from swarm import Simulation, Persona` is the entry point for scenario scripts. The
names load on first use, so `import swarm.runtime` alone (a game embedding only the
engine) does not pull in the simulation, the bus or networkx.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Simulation": "swarm.simulation",
    "World": "swarm.world",
    "Event": "swarm.events",
    "InboxMessage": "swarm.events",
    "Report": "swarm.events",
    "Persona": "swarm.agents",
    "Agent": "swarm.agents",
    "EngineModel": "swarm.model",
    "ScriptedModel": "swarm.model",
    "Turn": "swarm.model",
    "TurnModel": "swarm.model",
    "NoAction": "swarm.model",
    "ScenarioError": "swarm.scenario",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'swarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
