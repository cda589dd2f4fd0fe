"""The planner: who acts this tick, their turns batched into one call per model, and when each agent acts next.

A tick's model work goes through here (`Simulation._tick`: deliver -> plan -> act -> resolve -> record):

- `plan`: every agent that can act and wants to (something new to react to, a plan step due, or idle for
  `wake_after` ticks) gets its turns, with the memories it must recall embedded in one batch per model; an
  agent that could only wait and has nothing new costs no call;
- `act`: every turn of the tick to its model in one `decide` call per model, the models running side by side
  in worker threads so the bus stays live;
- `hint`: each agent's next expected turn to its model, so the persona-aware cache keeps (and fetches back)
  the KV of those who act soonest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from swarm.agents import Agent
from swarm.agents.actions import Wait
from swarm.agents.memory import embed_pending
from swarm.choices import Menu
from swarm.model import Turn, TurnModel
from swarm.model_names import by_model, model_name
from swarm.scenario import ScenarioError

if TYPE_CHECKING:
    from swarm.simulation import Simulation


class Planner:
    """The planning side of one simulation's tick loop (the module's docstring): reads the simulation's agents,
    world and models, counts into its counters, and holds the scenario's planning hooks (set through
    `Simulation.actions_for`, `choices`, `focus` and `next_act`)."""

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.menu = Menu()
        self.actions_for: Callable[[Simulation, Agent], list[type]] | None = None
        self.choices: Callable[[Simulation, Agent], dict[str, Iterable[str]]] | None = None
        self.focus: Callable[[Simulation, Agent], str | None] | None = None
        self.next_act: Callable[[Simulation, Agent], float | None] | None = None
        self.hinted: dict[str, float] = {}  # agent -> the tick last sent to its model (checkpointed)

    def plan(self) -> list[Turn]:
        """The turns of every agent that wants to act now (embedding what they must recall, in one batch)."""
        sim = self.sim
        tick = sim.world.tick
        acting = [a for a in sim.agents.values() if sim.world.can_act(a.id) and a.wants_to_act(tick)]
        if not acting:
            return []
        t0 = time.perf_counter()
        queries = {}  # agent -> its query vector, in the embedding space of its own model
        for name, group in by_model(sim.agents.values()).items():
            mine = [a for a in acting if model_name(a.persona) == name]
            vectors = embed_pending([a.memory for a in group], sim._model(name).embed,
                                    queries=[a.query_texts() for a in mine])
            queries.update(zip((a.id for a in mine), vectors, strict=True))
        sim.counters["model_seconds"] += time.perf_counter() - t0  # embedding is the model's work too
        turns = []
        actions = self.menu.describe(sim.action_types)
        for agent in acting:
            query = queries[agent.id]
            situation = sim.world.describe_for(agent.id)
            focus = self.focus(sim, agent) if self.focus is not None else None
            offer = self.offer(agent)
            if offer.schema is Wait and not agent.has_news(tick):
                agent.idle_since = tick  # woken with nothing new, and waiting is all it may do: no call needed
                continue
            for req in agent.requests(tick, sim.world.preamble, situation, offer.schema, query_vector=query,
                                      max_tokens=sim.max_action_tokens, k_memories=sim.retrieve, focus=focus,
                                      actions=actions, options=offer.options, choices=offer.choices):
                turns.append(Turn(req, agent, sim.world, sim.rng.getrandbits(32), sim))
        return turns

    def offer(self, agent: Agent):
        """What `agent` may do now: the scenario's `actions_for` (else every action type), narrowed by its
        `choices` (`swarm.choices.Menu.offer`)."""
        sim = self.sim
        described = tuple(sim.action_types)
        types = described if self.actions_for is None else tuple(self.actions_for(sim, agent))
        if not types:
            raise ScenarioError(f"actions_for gave {agent.id} no action types at tick {sim.world.tick}")
        return self.menu.offer(sim, agent, types, described, self.choices)

    async def act(self, turns: list[Turn]) -> list[Any]:
        """Each turn's answer, in order: one `decide` call per model, the models side by side."""
        if not turns:
            return []
        sim = self.sim
        t0 = time.perf_counter()
        groups: dict[int, tuple[str, TurnModel, list[int]]] = {}  # id(model) -> its name, it, its turns' places
        for i, turn in enumerate(turns):
            name, model = sim._model_of(turn)
            groups.setdefault(id(model), (name, model, []))[2].append(i)
        loop = asyncio.get_running_loop()
        decided = await asyncio.gather(*(loop.run_in_executor(None, model.decide, [turns[i] for i in at])
                                         for _, model, at in groups.values()))
        values: list[Any] = [None] * len(turns)
        for (name, _, at), out in zip(groups.values(), decided, strict=True):
            for i, value in zip(at, out, strict=True):
                values[i] = value
            sim.counters[f"model.{name}.turns"] += len(at)
        sim.counters["model_seconds"] += time.perf_counter() - t0
        sim.counters["model_calls"] += 1
        sim.counters["turns"] += len(turns)
        return values

    def hint(self) -> None:
        """Tell the model the tick at which each agent is next expected to act. Absolute ticks compare
        across agents whenever they were sent, so only changes need sending."""
        sim = self.sim
        models = sim.models
        if not models:
            return
        nxt, positions, hook = sim.world.tick + 1, sim.world.positions, self.next_act
        for agent in sim.agents.values():
            expect = None if hook is None else partial(hook, sim, agent)  # asked only if the agent is idle
            when = nxt + agent.ticks_until_next_act(nxt, arrives=positions[agent.id].arrive_tick, expect=expect)
            model = models.get(model_name(agent.persona))
            if model is not None and self.hinted.get(agent.id) != when:
                self.hinted[agent.id] = when
                model.hint(agent.id, when)
        for model in models.values():
            model.prefetch()  # overlaps the bookkeeping until the next tick's turns
