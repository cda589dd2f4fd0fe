"""The desk's layout and staff: how many agents work triage, each queue and the escalation desk, the places
they sit in (pods of ten), and their names and personas."""

from __future__ import annotations

from swarm import Persona
from swarm.scenarios.support_desk.tickets import CATEGORIES

POD = 10  # agents per place: a place with many agents makes long prompts and floods of join events

FIRST_NAMES = ("Ava", "Ben", "Cleo", "Dev", "Esme", "Finn", "Gia", "Hugo", "Iris", "Jonah", "Kira", "Leo", "Mina",
               "Nico", "Orla", "Pavel", "Quinn", "Rosa", "Sami", "Tess", "Umar", "Vera", "Wes", "Xena", "Yusuf",
               "Zara", "Abel", "Bea", "Cyrus", "Dina", "Eli", "Faye", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena",
               "Milo", "Nora")
TRAITS = {
    "triage": ("quick reader, calm under load", "methodical, terse", "sceptical of long openers",
               "tidy, labels everything", "fast, rarely misreads a ticket"),
    "specialist": ("patient, explains plainly", "precise, fixes things first time", "warm, apologises once",
                   "thorough, checks the account history", "brisk and friendly"),
    "senior": ("unflappable, owns every escalation", "decisive, authorised to make exceptions",
               "calm, good with angry customers"),
}
PLACES = {"triage": ("triage desk", "new tickets land here"),
          "billing": ("billing queue", "charges, refunds, invoices"),
          "technical": ("technical queue", "crashes, errors, sync"),
          "account": ("account queue", "logins, passwords"),
          "shipping": ("shipping queue", "parcels, deliveries, returns"),
          "senior": ("escalation desk", "senior staff")}
THINGS = {"triage": ("SLA board", "urgent 4 ticks, normal 10, low 20"), "billing": ("refund policy", ""),
          "technical": ("status page", ""), "account": ("identity checklist", ""), "shipping": ("carrier portal", ""),
          "senior": ("goodwill credit budget", "")}


def pools(agents: int, specialists: int | None) -> dict[str, int]:
    """How many agents work each pool: triage, the four queues (the specialists dealt round them) and senior.
    Without `specialists`, a quarter of the agents triage, an eighth are seniors and the rest specialists."""
    if specialists is None:
        seniors, triage = max(1, agents // 8), max(1, agents // 4)
        specialists = agents - seniors - triage
    elif not 4 <= specialists <= agents - 2:
        raise ValueError(f"specialists must be within 4..{agents - 2} for {agents} agents, not {specialists}")
    else:
        seniors = max(1, (agents - specialists) // 3)
        triage = agents - specialists - seniors
    return {"triage": triage, **{c: len(range(i, specialists, 4)) for i, c in enumerate(CATEGORIES)},
            "senior": seniors}


def pods(pool: str, count: int) -> list[str]:
    """The places a pool of `count` agents sits in, POD to a place."""
    place = PLACES[pool][0]
    return [place] if count <= POD else [f"{place} {i + 1}" for i in range((count + POD - 1) // POD)]


def staff_name(n: int) -> str:
    """The `n`-th agent's name: the first names, then the same with a number."""
    return FIRST_NAMES[n % len(FIRST_NAMES)] + (str(n // len(FIRST_NAMES) + 1) if n >= len(FIRST_NAMES) else "")


def persona(name: str, role: str, pool: str, n: int) -> Persona:
    traits = TRAITS[role][n % len(TRAITS[role])]
    if role == "triage":
        return Persona(name=name, role="triage agent", traits=traits, style="triage",
                       goals=("route every ticket to the right queue with the right priority",))
    if role == "senior":
        return Persona(name=name, role="senior support engineer", traits=traits, style="specialist",
                       goals=("resolve every escalated ticket for good",))
    return Persona(name=name, role=f"{pool} specialist", traits=traits, style="specialist",
                   goals=(f"resolve {pool} tickets with the first answer",))
