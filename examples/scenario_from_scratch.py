"""A scenario from scratch: a rumour spreads through a small village.

Run it with a model, or with the scripted policy below instead of a model:

    swarm run examples/scenario_from_scratch.py --model models/random-moe --ticks 10
    swarm run examples/scenario_from_scratch.py --model scripted --ticks 30 --record rumour.jsonl
    swarm replay rumour.jsonl

A scenario file defines `build(sim, **options)`: places, agents, its own action types
with their handlers, and metrics. It keeps its own state in `sim.state` (plain data),
so checkpoints capture it. `policy(turn)` is optional: a scripted agent for
`--model scripted`, for baselines and tests.
"""

import random
from typing import Annotated

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Move, Say, Wait

RUMOUR = "the miller buried gold under the old well"
PLACES = {"tavern": "warm and loud", "square": "the market stalls", "mill": "flour dust everywhere",
          "well": "an old stone well"}
ROUTES = [("tavern", "square", 2), ("square", "mill", 4), ("square", "well", 3)]
FOLK = [("Mira", "innkeeper", "gossips about everyone"), ("Bram", "miller", "secretive, proud"),
        ("Tova", "baker", "kind, curious"), ("Ilse", "guard", "suspicious of strangers"),
        ("Oren", "farmer", "slow to speak"), ("Pell", "child", "runs everywhere"),
        ("Wren", "herbalist", "quiet, observant"), ("Cato", "merchant", "talks business")]


class Whisper(Action, tag="whisper"):
    """Only the listener hears it."""

    to: Annotated[str, msgspec.Meta(max_length=40)]
    text: Annotated[str, msgspec.Meta(max_length=200)]


def build(sim, agents: int = 6):
    if not 2 <= agents <= len(FOLK):
        raise ValueError(f"this village has room for 2 to {len(FOLK)} agents, not {agents}")
    sim.world.preamble = "A small village on market day. People meet, talk and move between places."
    sim.world.minutes_per_tick = 2
    for place, description in PLACES.items():
        sim.world.add_place(place, description)
    for a, b, minutes in ROUTES:
        sim.world.connect(a, b, minutes=minutes)
    places = list(PLACES)
    for i, (name, role, traits) in enumerate(FOLK[:agents]):
        style = "gossip" if "goss" in traits or role == "child" else "plain"  # the voice; names an adapter
        sim.add_agent(Persona(name=name, role=role, traits=traits, style=style), at=places[i % len(places)])
    sim.add_actions(Whisper)
    sim.state["heard"] = [FOLK[0][0]]  # Mira starts with the rumour

    @sim.on(Whisper)
    def whisper(world, actor, action):
        why = world.absent(actor, action.to)  # the model may name anyone, or no one real
        if why:
            return world.fail(actor, action, why)
        return world.event("whisper", f'{actor} whispers to {action.to}: "{action.text}"', actor=actor,
                           place=world.place_of(actor), target=action.to, importance=7.0,
                           data={"audience": [action.to], "text": action.text})

    @sim.every_tick
    def spread(sim, events):
        for e in events:
            if "gold" in e.text and e.kind in ("say", "whisper"):
                for who in sim.world.observers(e):
                    if who not in sim.state["heard"]:
                        sim.state["heard"].append(who)

    @sim.metric("rumour_reach")
    def reach(sim):
        return len(sim.state["heard"]) / len(sim.agents)


def policy(turn):
    """Scripted villagers: those who know the rumour pass it on to someone here, the rest wander."""
    from swarm.agents.actions import PlanUpdate

    rng = random.Random(turn.seed)
    me, world = turn.agent.id, turn.world
    if turn.request.kind == "plan":
        return PlanUpdate(steps=["find someone to talk to"])
    if turn.request.kind == "reflect":
        from swarm.agents.actions import Insight

        return Insight(text="People here love a secret.")
    here = world.place_of(me)
    others = [a for a in world.agents_at(here) if a != me]
    knows = me == FOLK[0][0] or any("gold" in m.text for m in turn.agent.memory)
    if knows and others:
        to = rng.choice(others)
        return Whisper(to=to, text=RUMOUR) if rng.random() < 0.5 else Say(text=f"Did you hear? {RUMOUR}!")
    roll = rng.random()
    if roll < 0.5:
        return Move(to=rng.choice(list(world.graph.neighbors(here))))
    if roll < 0.8 and others:
        return Say(text="Fine weather for market day.")
    return Wait()
