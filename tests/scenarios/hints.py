"""Cache hints against the turns that followed: how often an estimate named the tick an agent acted next."""

from __future__ import annotations

from swarm import ScriptedModel, Simulation
from swarm.scenario import load_module


class Watched(ScriptedModel):
    """The scenario's scripted policy, noting each agent's act ticks and the latest hint it got."""

    def __init__(self, spec: str):
        super().__init__(load_module(spec).policy, ref="scripted")
        self.acted: dict[str, list[int]] = {}
        self.hints: dict[str, float] = {}

    def decide(self, turns):
        for t in turns:
            if t.request.kind == "act":
                self.acted.setdefault(t.agent.id, []).append(t.world.tick)
        return super().decide(turns)

    def hint(self, persona, next_use):
        self.hints[persona] = next_use


def hit_rates(spec: str, *, ticks: int, seed: int, horizon: int = 10, **options) -> tuple[float, float]:
    """(hints, old estimate): the share of (tick, idle agent) samples whose estimate, rounded, is the tick the
    agent acted next. Ticks ahead are capped at `horizon` (inf is right for an agent idle that long); the
    run's last `horizon` ticks are not sampled. The old estimate is the agent's own (moving average)."""
    model = Watched(spec)
    sim = Simulation.from_scenario(spec, model=model, seed=seed, **options)
    samples = []
    for _ in range(ticks):
        sim.tick()
        nxt = sim.world.tick
        samples += [(nxt, a.id, model.hints[a.id], nxt + a.ticks_until_next_act(nxt))
                    for a in sim.agents.values() if not a.wants_to_act(nxt)]
    sim.close()
    hits, n = [0, 0], 0
    for nxt, agent, *estimates in samples:
        if nxt <= ticks - horizon:
            n += 1
            actual = min((t for t in model.acted.get(agent, ()) if t >= nxt), default=nxt + horizon)
            for i, when in enumerate(estimates):
                hits[i] += round(min(when - nxt, horizon)) == min(actual - nxt, horizon)
    return hits[0] / n, hits[1] / n
