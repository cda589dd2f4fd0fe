"""The village's state (checkpointed with the simulation) and the timetable read from it: where each villager
should be at a tick, who knows of the gathering, and when each villager's plan step changes next."""

from __future__ import annotations

import math

import msgspec

from swarm.agents.plans import OPEN

MORNING, EVENING, NIGHT = 8 * 60, 17 * 60, 21 * 60


class Gathering(msgspec.Struct):
    """The evening's gathering: what, where and when, and who hears of it first."""

    topic: str  # "harvest supper"
    keyword: str  # the word that marks talk of it ("harvest": no other line the villagers say uses it)
    place: str
    time: str  # "18:30"
    tick: int  # the tick it begins
    end: int  # the tick it is over
    first: str  # the villager the reeve's runner tells at tick 0

    def mentioned_in(self, text: str) -> bool:
        return self.keyword in text.lower() or self.time in text


class Town(msgspec.Struct):
    """`sim.state` of a village: each villager's workplace, evening place and home; when each villager who knows
    of the gathering sets off for it; who attended (the tick they were first seen there); each villager's
    current plan step; the Say and Tell events so far."""

    gathering: Gathering
    home: dict[str, str] = {}
    work: dict[str, str] = {}
    evening: dict[str, str] = {}
    informed: dict[str, int] = {}  # villager -> the tick to set off for the gathering
    attended: dict[str, int] = {}
    step: dict[str, str] = {}
    conversations: int = 0


def learn(sim, who: str) -> None:
    """`who` now knows of the gathering: they set off in time to walk there from their evening place."""
    town: Town = sim.state
    g = town.gathering
    if who in town.informed or who not in sim.agents:
        return
    walk = sim.world.travel_minutes(town.evening[who], g.place) or 0.0
    town.informed[who] = max(sim.world.tick + 1, g.tick - math.ceil(walk / sim.world.minutes_per_tick))


def step_text(sim, who: str, tick: int) -> str:
    """The timetable: where `who` should be at `tick`, and what for."""
    town: Town = sim.state
    g = town.gathering
    minute = (sim.world.start_minute + tick * sim.world.minutes_per_tick) % (24 * 60)
    go = town.informed.get(who)
    if go is not None and go <= tick < g.end:
        return f"Be at the {g.place}: the {g.topic} at {g.time}."
    if MORNING <= minute < EVENING:
        text = f"Be at the {town.work[who]}: work until 17:00."
    elif EVENING <= minute < NIGHT:
        text = f"Be at the {town.evening[who]}: spend the evening there."
    else:
        text = f"Be at the {town.home[who]}: go home and sleep."
    if go is not None and tick < g.tick:
        text += f" Spread the word: {g.topic}, {g.place}, {g.time}."
    return text


def next_change(sim, who: str, tick: int) -> float:
    """The first tick after `tick` at which `who`'s timetable step differs from the one it holds: where the
    clock passes 08:00, 17:00 or 21:00, or (for those who know) the gathering's hours."""
    town: Town = sim.state
    now, w = town.step.get(who), sim.world
    minute = w.start_minute + tick * w.minutes_per_tick
    turns = []
    for at in (MORNING, EVENING, NIGHT):
        at += minute - minute % (24 * 60)
        if at <= minute:
            at += 24 * 60
        turns.append(math.ceil((at - w.start_minute) / w.minutes_per_tick - 1e-9))
    go, g = town.informed.get(who), town.gathering
    if go is None:
        return min(turns)  # without the gathering every turn of the clock changes the step
    for t in sorted({*turns, go, g.tick, g.end}):
        if t > tick and step_text(sim, who, t) != now:
            return t
    return math.inf


def keep_timetable(sim, agent, tick: int) -> None:
    """Make the agent's current plan step the timetable's for `tick`: a new step due then (which wakes the
    agent), and every other open step done."""
    town: Town = sim.state
    text = step_text(sim, agent.id, tick)
    if town.step.get(agent.id) == text:
        return
    plan = agent.plan
    root = plan.top_goal()
    if root is None:
        root = plan.add_goal(agent.persona.goals[0] if agent.persona.goals else "get through the day")
    new = plan.add_goal(text, parent=root, due=tick)
    for step in list(plan.graph.successors(root)):
        if step != new and plan.get(step).status in OPEN:
            plan.set_status(step, "done")
    town.step[agent.id] = text
