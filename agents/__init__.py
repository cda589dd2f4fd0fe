"""Personas, agents, memory, plans and action types (built on swarm.runtime)."""

from swarm.agents.actions import (
    BASE_ACTIONS,
    Action,
    Give,
    Insight,
    Move,
    PlanUpdate,
    Say,
    Use,
    Wait,
    action_union,
)
from swarm.agents.agent import Agent, Observation, TurnKind, TurnRequest
from swarm.agents.memory import Memory, MemoryStream, embed_pending
from swarm.agents.persona import Persona
from swarm.agents.plans import Plan, Step

__all__ = [
    "BASE_ACTIONS",
    "Action",
    "Agent",
    "Give",
    "Insight",
    "Memory",
    "MemoryStream",
    "Move",
    "Observation",
    "Persona",
    "Plan",
    "PlanUpdate",
    "Say",
    "Step",
    "TurnKind",
    "TurnRequest",
    "Use",
    "Wait",
    "action_union",
    "embed_pending",
]
