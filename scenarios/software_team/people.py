"""The software team's people: a PM, an architect, one QA engineer per six people or so, and engineers, each
engineer in an area of the work (backend, frontend or full-stack) in turn."""

from __future__ import annotations

from swarm import Persona
from swarm.scenarios.software_team.actions import PARTS

AREAS = {"backend": ("api", "database", "worker"), "frontend": ("ui", "docs"), "full-stack": PARTS}
ENGINEERS = ("Bo", "Chen", "Dara", "Emil", "Fatou", "Goran", "Hiro", "Ines", "Jett", "Kofi", "Lior", "Maya", "Nils",
             "Oona", "Pia", "Ravi", "Sol")
QAS = ("Quinn", "Rui", "Sade")
TRAITS = ("careful, likes small diffs", "fast, pragmatic", "thorough, writes tests first", "quiet, precise",
          "curious, asks good questions")


def roster(agents: int) -> list[tuple[Persona, str, str | None]]:
    """A team of `agents`: each member's persona, role ("pm", "architect", "qa" or "engineer") and area (an
    engineer's, else None)."""
    qa_count = max(1, (agents - 2) // 6)
    team = [("Priya", "pm"), ("Arjun", "architect"), *((q, "qa") for q in QAS[:qa_count]),
            *((e, "engineer") for e in ENGINEERS[: agents - 2 - qa_count])]
    out = []
    for i, (name, role) in enumerate(team):
        area = tuple(AREAS)[(i - 2 - qa_count) % len(AREAS)] if role == "engineer" else None
        out.append((_persona(name, role, TRAITS[i % len(TRAITS)], area), role, area))
    return out


def _persona(name: str, role: str, traits: str, area: str | None) -> Persona:
    """How a member introduces itself to its model: its role in words, its style of speech, its goals."""
    if role == "pm":
        return Persona(name=name, role="product manager", traits=traits, style="manager",
                       goals=("turn the request into a clear spec", "release the feature once it is approved"))
    if role == "architect":
        return Persona(name=name, role="software architect", traits=traits, style="engineer",
                       goals=("design the feature simply and split it into tasks",))
    if role == "qa":
        return Persona(name=name, role="QA engineer", traits=traits, style="engineer",
                       goals=("approve only complete, tested changes",))
    return Persona(name=name, role=f"{area} engineer", traits=traits, style="engineer",
                   goals=("implement tasks cleanly, with tests",))
