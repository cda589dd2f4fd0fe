"""The views rebuilt from events alone, for sources that have no simulation to ask (an event log played
back, a simulation watched over a bus): the roster, one agent's detail, the world's places."""

from __future__ import annotations

import re
from typing import Any

from swarm.events import Event
from swarm.tui.data import AgentDetail, AgentRow

SEEN_SHOWN = 8
NOT_ACTIONS = {"join", "arrive", "reflect", "plan", "inbox", "fail"}  # world words, not an agent's action
PRIVATE = {"wait", "reflect", "plan", "fail"}  # only the actor perceives these (as the world decides)
_ROLE = re.compile(r"^.+ \((.*)\) is at the ")  # a join event's text, for logs from before joins carried personas


def roster(events: list[Event]) -> list[AgentRow]:
    """Each actor's last known place (from join/arrive/move) and last action, in order of appearance."""
    places: dict[str, str] = {}
    actions: dict[str, str] = {}
    for e in events:
        if e.actor is None:
            continue
        places.setdefault(e.actor, "-")
        if e.kind in ("join", "arrive") and e.place:
            places[e.actor] = e.place
        elif e.kind == "move":
            places[e.actor] = f"-> {e.target}" if e.target else (e.place or "-")
        if e.kind != "join":
            actions[e.actor] = e.text
    return [AgentRow(name, place, actions.get(name, ""), "") for name, place in places.items()]


def detail(events: list[Event], agent: str) -> AgentDetail | None:
    """What the events say about `agent`: its persona (as its join told it), place, plan, last action, and
    the latest events it took part in or could see (at its place, or addressed to it). None: no such agent."""
    persona: dict[str, str] = {}
    place, action, joined = "-", "", False
    plan: list[tuple[str, str]] = []
    seen: list[str] = []
    for e in events:
        mine = e.actor == agent
        if mine and e.kind == "join":
            joined = True
            persona = dict(e.data.get("persona", {}))
            if not persona and (m := _ROLE.match(e.text)) and m.group(1) != "a newcomer":
                persona = {"role": m.group(1)}
        if mine and e.kind in ("join", "arrive") and e.place:
            place = e.place
        elif mine and e.kind == "move":
            place = f"-> {e.target}" if e.target else (e.place or place)
        if mine and e.kind == "plan":
            plan = [("pending", str(step)) for step in e.data.get("steps", [])]
        if mine and e.kind not in NOT_ACTIONS:
            action = e.text
        audience = e.heard_by
        if mine or e.target == agent or e.kind not in PRIVATE and (
                agent in audience if audience is not None else e.place == place):
            seen.append(f"(tick {e.tick}, {e.kind}) {e.text}")
    if not joined and not seen:
        return None
    adapter = persona.pop("adapter", None)
    return AgentDetail(agent, persona, adapter, seen[-SEEN_SHOWN:], plan, "", action, place, None, recorded=True)


def world(places: list[str], rows: list[AgentRow]) -> dict[str, Any]:
    """A `World.snapshot()`-shaped dict from the roster: who is at each place, who is on the road."""
    at: dict[str, list[str]] = {p: [] for p in places}
    travelling = {}
    for r in rows:
        if r.place.startswith("-> "):
            travelling[r.name] = r.place[3:]
        elif r.place != "-":
            at.setdefault(r.place, []).append(r.name)
    return {"places": at, "travelling": travelling}
