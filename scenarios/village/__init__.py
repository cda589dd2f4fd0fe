"""village: an afternoon and evening in a small river town, and a piece of news passed by word of mouth.

What happens. The clock starts at 14:00, ten minutes a tick. Villagers work at the mill, the market
or the tavern until 17:00, spend the evening at the tavern or on the square, and go home to their
lane at 21:00 (and back to work at 08:00 the next day). Each villager's day is a timetable of plan
steps with due ticks ("Be at the mill: work until 17:00."), so the prompt always says where to be.
At tick 0 a runner tells one villager of an evening gathering: what, where and when. Whoever knows
may pass it on, aloud (Say, everyone here hears) or privately (Tell); whoever hears it from someone
who knows learns it too, finds "Spread the word: ..." in their plan, and gets a step to be at the
gathering in time.

Actions: Say, Move, Wait (the framework's), Work(task) at one's own workplace, and Tell(to, news)
to someone here (only they hear it).

Metrics: `informed` (villagers who know of the gathering) and `informed_share`; `attendance`
(villagers who knew and were at the place while it lasted) and `attendance_share`; `conversations`
(Say and Tell events); `gathering` (what, where, when).

Options: `agents` (default 12, up to 5,000) and `gathering` (its time, "18:30"), e.g.
`Simulation.from_scenario("village", model="scripted", agents=30, gathering="19:00")`.

Scale: every 24 villagers make a quarter with its own square, tavern, mill and market; every 8 share a
lane of homes; the quarters' squares join in one road (so a place holds tens of villagers, not hundreds).

    swarm run village --model scripted --ticks 40 --seed 1 --headless --json
    swarm run village --model random --ticks 40 --seed 1 --headless --json      # the floor
    swarm run village --model scripted --agents 1000 --ticks 3 --headless
"""

from __future__ import annotations

import math
import random
import re

from swarm import Persona
from swarm.agents.actions import Give, Use
from swarm.scenarios.village.actions import Tell, Work
from swarm.scenarios.village.people import GOALS, LANE, PLACES, QUARTER, ROUTES, WORKPLACE, cast, in_quarter, lane
from swarm.scenarios.village.script import VOICES, policy
from swarm.scenarios.village.state import Gathering, Town, keep_timetable, learn, next_change

__all__ = ["MAIN_METRIC", "Gathering", "Tell", "Town", "VOICES", "Work", "build", "policy"]

MAIN_METRIC = "informed_share"  # the figure benchmarks/scenarios.py compares across policies
PREAMBLE = ("A small town by a river. People work at the mill and the market by day, meet at the tavern or "
            "on the square in the evening, and sleep at home. News travels by word of mouth.")
START, MINUTES_PER_TICK = 14 * 60, 10  # the run starts at 14:00
GATHERING_MINUTES = 60
MAX_AGENTS = 5000

# what the gathering is, and the word that marks talk of it (no other line the villagers say uses it)
GATHERINGS = [("harvest supper", "harvest"), ("lantern walk", "lantern"), ("wedding dance", "wedding"),
              ("bonfire night", "bonfire"), ("mummers' play", "mummers"), ("flood council", "flood")]
GATHERING_PLACES = ("square", "mill", "market")


def build(sim, agents: int = 12, gathering: str = "18:30"):
    if not 2 <= agents <= MAX_AGENTS:
        raise ValueError(f"the village takes 2 to {MAX_AGENTS} agents, not {agents}")
    begins = _minute_of(gathering)
    if not START < begins < 24 * 60:
        raise ValueError(f"the gathering must be later on day 1 than the 14:00 start, not {gathering!r}")
    rng = random.Random(sim.seed)
    world = sim.world
    world.preamble, world.minutes_per_tick, world.start_minute = PREAMBLE, MINUTES_PER_TICK, START
    sim.wake_after = None  # the timetable wakes villagers; asking sleepers every few ticks would cost 20% more turns
    quarters = math.ceil(agents / QUARTER)
    for q in range(quarters):
        for place, description in PLACES.items():
            world.add_place(in_quarter(q, place), description)
        for a, b, minutes in ROUTES:
            world.connect(in_quarter(q, a), in_quarter(q, b), minutes=minutes)
        if q:
            world.connect(in_quarter(q - 1, "square"), in_quarter(q, "square"), minutes=8)
    for n in range(math.ceil(agents / LANE)):
        world.add_place(lane(n), "homes")
        world.connect(lane(n), in_quarter(n * LANE // QUARTER, "square"), minutes=3)

    people = cast(agents, rng)
    homes, work, evening = {}, {}, {}
    for i, (name, role, _, _) in enumerate(people):
        q, kind = i // QUARTER, WORKPLACE[role]
        homes[name], work[name] = lane(i // LANE), in_quarter(q, kind)
        evening[name] = in_quarter(q, "tavern" if kind == "tavern" or rng.random() < 0.65 else "square")
    for name, role, traits, style in people:
        sim.add_agent(Persona(name=name, role=role, traits=traits, goals=(GOALS[WORKPLACE[role]],), style=style),
                      at=work[name])
    topic, keyword = rng.choice(GATHERINGS)
    tick = math.ceil((begins - START) / MINUTES_PER_TICK)
    sim.state = Town(Gathering(topic, keyword, rng.choice(GATHERING_PLACES), gathering, tick,
                               tick + GATHERING_MINUTES // MINUTES_PER_TICK, rng.choice(list(sim.agents)[:QUARTER])),
                     home=homes, work=work, evening=evening)
    for agent in sim.agents.values():
        keep_timetable(sim, agent, 0)

    sim.remove_actions(Give, Use)  # nothing in this town is carried about
    sim.add_actions(Work, Tell)
    sim.actions_for(offered)
    sim.on(Work, state=True)(work_at)
    sim.on(Tell)(tell)
    sim.every_tick(town_tick)
    sim.next_act(timetable)
    for name, metric in METRICS.items():
        sim.metric(name)(metric)


# -- the rules -------------------------------------------------------------------------------------


def offered(sim, agent):
    """Work only at one's own workplace: the rule is in the choices, not in a fail after the fact."""
    if sim.world.place_of(agent.id) == sim.state.work[agent.id]:
        return sim.action_types
    return [t for t in sim.action_types if t is not Work]


def work_at(town: Town, world, actor: str, action: Work):
    here, mine = world.place_of(actor), town.work.get(actor)
    if here != mine:
        return world.fail(actor, action, f"you work at the {mine}, and this is the {here}")
    # nobody else is woken by someone at their work: only talk wakes people
    return world.event("work", f"{actor} works at the {here}: {action.task}.", actor=actor, place=here,
                       audience=[], data={"task": action.task}, importance=1.0)


def tell(world, actor: str, action: Tell):
    why = world.absent(actor, action.to)
    if why:
        return world.fail(actor, action, why)
    return world.event("tell", f'{actor} tells {action.to}: "{action.news}"', actor=actor,
                       place=world.place_of(actor), target=action.to, importance=6.0,
                       audience=[action.to], data={"text": action.news})


def town_tick(sim, events):
    """The runner's news at tick 0, the news passing from whoever knows to whoever hears it, the gathering's
    start, attendance and end, and every villager's plan step for the coming tick."""
    world, town = sim.world, sim.state
    g, tick, out = town.gathering, sim.world.tick, []
    if tick == 0:
        out.append(world.event("news", f"A runner from the reeve tells {g.first}: the {g.topic} is at the "
                               f"{g.place} at {g.time} tonight. Pass it on!", actor="runner",
                               place=world.place_of(g.first), target=g.first, importance=7.0,
                               audience=[g.first]))
        learn(sim, g.first)
    for e in events:
        if e.kind in ("say", "tell"):
            town.conversations += 1
            if e.actor in town.informed and g.mentioned_in(e.data.get("text", "")):
                for who in world.observers(e):
                    learn(sim, who)
    if tick == g.tick:
        out.append(world.event("gathering", f"The {g.topic} begins at the {g.place}.", place=g.place,
                               importance=5.0))
    if g.tick <= tick < g.end:
        for who in world.agents_at(g.place):
            if who in town.informed:
                town.attended.setdefault(who, tick)
    if tick == g.end - 1:
        out.append(world.event("gathering", f"The {g.topic} at the {g.place} is over.", place=g.place,
                               importance=3.0))
    for agent in sim.agents.values():
        keep_timetable(sim, agent, tick + 1)
    return out


def timetable(sim, agent):
    """A villager with nothing to answer next acts when its timetable step changes (talk may wake it
    sooner): in ticks from the coming one."""
    coming = sim.world.tick + 1
    return next_change(sim, agent.id, coming) - coming


METRICS = {
    "informed": lambda sim: len(sim.state.informed),
    "informed_share": lambda sim: round(len(sim.state.informed) / len(sim.agents), 4),
    "attendance": lambda sim: len(sim.state.attended),
    "attendance_share": lambda sim: round(len(sim.state.attended) / len(sim.agents), 4),
    "conversations": lambda sim: sim.state.conversations,
    "gathering": lambda sim: _describe(sim.state.gathering),
}


def _describe(g: Gathering) -> str:
    return f"{g.topic} at the {g.place}, {g.time} (tick {g.tick})"


def _minute_of(clock: str) -> int:
    m = re.fullmatch(r"(\d{1,2}):(\d\d)", clock)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"a time of day is HH:MM, not {clock!r}")
    return int(m[1]) * 60 + int(m[2])
