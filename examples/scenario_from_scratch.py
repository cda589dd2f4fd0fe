"""A scenario from scratch: a rumour spreads through a village.
Run: swarm run examples/scenario_from_scratch.py --ticks 20 (--model scripted: the policy below)."""
import random
from typing import Annotated

import msgspec

from swarm import Persona
from swarm.agents.actions import Action, Insight, Move, Person, PlanUpdate, Say, Wait

RUMOUR = "the miller buried gold under the old well"
FOLK = [("Mira", "innkeeper", "gossip"), ("Bram", "miller", "plain"), ("Tova", "baker", "gossip"),
        ("Ilse", "guard", "plain"), ("Oren", "farmer", "plain"), ("Pell", "child", "gossip")]


class Whisper(Action, tag="whisper"):  # a scenario's own action
    """Whisper to someone here: only they hear it."""  # what the model reads about it

    to: Person  # the grammar offers only the people here this tick
    text: Annotated[str, msgspec.Meta(max_length=200, description="what you whisper")]


def build(sim, agents: int = 6):
    sim.world.preamble = "A small village on market day. People meet, talk and move between places."
    for place in ("tavern", "square", "mill", "well"):
        sim.world.add_place(place)
    for a, b, minutes in [("tavern", "square", 2), ("square", "mill", 4), ("square", "well", 3)]:
        sim.world.connect(a, b, minutes=minutes)
    for i, (name, role, style) in enumerate(FOLK[:agents]):
        sim.add_agent(Persona(name=name, role=role, style=style), at=sim.world.places[i % 4])
    sim.add_actions(Whisper)
    sim.state["heard"] = ["Mira"]  # scenario state is plain data, so checkpoints keep it

    @sim.on(Whisper)
    def whisper(world, actor, action):
        why = world.absent(actor, action.to)  # a model cannot name anyone else; a scripted policy could
        if why:
            return world.fail(actor, action, why)
        return world.event("whisper", f'{actor} whispers to {action.to}: "{action.text}"', actor=actor,
                           place=world.place_of(actor), target=action.to, audience=[action.to])

    @sim.every_tick
    def spread(sim, events):
        for e in events:
            if "gold" in e.text and e.kind in ("say", "whisper"):
                sim.state["heard"] += [w for w in sim.world.observers(e) if w not in sim.state["heard"]]

    sim.metric("rumour_reach")(lambda sim: len(sim.state["heard"]) / len(sim.agents))


def policy(turn):  # scripted villagers: those who know pass the rumour on, the rest wander and chat
    rng, me, world = random.Random(turn.seed), turn.agent.id, turn.world
    if turn.request.kind != "act":
        return PlanUpdate(steps=["talk to people"]) if turn.request.kind == "plan" else Insight(text="Secrets travel.")
    others = [a for a in world.agents_at(world.place_of(me)) if a != me]
    if others and me in turn.sim.state["heard"]:
        return Whisper(to=rng.choice(others), text=RUMOUR) if rng.random() < 0.5 else Say(text=f"Hear this: {RUMOUR}!")
    if rng.random() < 0.5:
        return Move(to=rng.choice(list(world.graph.neighbors(world.place_of(me)))))
    return Say(text="Fine weather for market day.") if others and rng.random() < 0.6 else Wait()
