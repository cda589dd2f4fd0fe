"""How well the KV cache's hints foresee each agent's next turn, on the bundled scenarios.

    .venv/bin/python -P benchmarks/next_act.py                    # a few seconds on 2 CPU cores
    .venv/bin/python -P benchmarks/next_act.py --quick            # a smoke run
    .venv/bin/python -P benchmarks/next_act.py --output benchmarks/results/next-act-cpu.json

Each scenario runs with its scripted policy (no language model). After every tick the simulation hints
each agent's expected next-act tick to the model; this script keeps the latest hint per agent (the
estimate the engine holds) and, side by side, the old estimate: the agent's own, from its due plan steps
and the moving average of its intervals between turns (`Agent.ticks_until_next_act` with no travel and no
scenario hook). Afterwards it compares both with the tick at which each agent really acted next.

Every (tick, agent) is a sample. Ticks from now, predicted and actual, are capped at the horizon (an
agent that will not act within it counts as "the horizon or later", so inf is right for an agent that
stays idle); the last `horizon` ticks of a run are not sampled (their answer is not known yet).
Figures per estimate: `mae` (mean absolute error in ticks), `exact` (the share where the predicted tick,
rounded, is the actual one), `within_1`, and `pair_order`: over pairs of agents at the same tick that
really act at different ticks, the share the estimate orders the same way (ties in the estimate count
half): what hint-driven eviction and prefetch need. `all` counts every sample; `idle` only those of
agents with nothing to act on at the coming tick, where estimating is the whole question.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from pathlib import Path

from swarm import ScriptedModel, Simulation
from swarm.scenario import scripted_model

# scenario -> (options, ticks, runs): village runs from 14:00 past 08:00 the next day (10 minutes a tick);
# a werewolf game or a feature is over in 10 to 25 ticks, so those run several seeds, not longer
SCENARIOS = {
    "village": ({"agents": 24}, 120, 1),
    "support_desk": ({"agents": 16}, 100, 1),
    "software_team": ({"agents": 8}, 40, 4),
    "werewolf": ({"agents": 9}, 40, 4),
}
HORIZON = 20


class Watched(ScriptedModel):
    """The scenario's scripted policy, noting who acted at which tick and the latest hint per agent."""

    def __init__(self, policy):
        super().__init__(policy, ref="scripted")
        self.acted: dict[str, list[int]] = {}
        self.hints: dict[str, float] = {}

    def decide(self, turns):
        for t in turns:
            if t.request.kind == "act":
                self.acted.setdefault(t.agent.id, []).append(t.world.tick)
        return super().decide(turns)

    def hint(self, persona, next_use):
        self.hints[persona] = next_use


def run(name: str, options: dict, ticks: int, seed: int) -> tuple[list[dict], dict[str, list[int]], float]:
    """Per tick: {agent: (new estimate, old estimate, idle)} for the coming tick; each agent's act ticks."""
    model = Watched(scripted_model(name).policy)
    sim = Simulation.from_scenario(name, model=model, seed=seed, bus=None, **options)
    samples = []
    t0 = time.perf_counter()
    for _ in range(ticks):
        sim.tick()
        nxt = sim.world.tick  # the tick the hints just sent look ahead from
        samples.append({a.id: (model.hints[a.id], nxt + a.ticks_until_next_act(nxt), not a.wants_to_act(nxt))
                        for a in sim.agents.values()})
    seconds = time.perf_counter() - t0
    sim.close()
    return samples, model.acted, seconds


def score(runs: list[tuple[list[dict], dict[str, list[int]]]], horizon: int) -> dict:
    """The figures of both estimates, over all samples and over idle agents' only."""
    out = {}
    for which, pick in (("all", lambda idle: True), ("idle", lambda idle: idle)):
        rows = []  # (run and tick, actual, new, old) in ticks from the coming tick, capped at the horizon
        for r, (samples, acted) in enumerate(runs):
            for i, by_agent in enumerate(samples[: len(samples) - horizon]):
                nxt = i + 1
                for agent, (new, old, idle) in by_agent.items():
                    if pick(idle):
                        actual = next((t for t in acted.get(agent, ()) if t >= nxt), math.inf)
                        rows.append(((r, nxt), *(min(x - nxt, horizon) for x in (actual, new, old))))
        out[which] = {"samples": len(rows), "new": _figures(rows, 2), "old": _figures(rows, 3)}
    return out


def _figures(rows: list[tuple], col: int) -> dict:
    if not rows:
        return {}
    errors = [abs(r[col] - r[1]) for r in rows]
    right = pairs = 0.0
    for _, group in itertools.groupby(rows, key=lambda r: r[0]):  # pairs of agents at the same tick
        for a, b in itertools.combinations(list(group), 2):
            if a[1] != b[1]:
                pairs += 1
                sooner = a[1] < b[1]
                right += 0.5 if a[col] == b[col] else float((a[col] < b[col]) == sooner)
    return {"mae": round(sum(errors) / len(errors), 3),
            "exact": round(sum(round(r[col]) == r[1] for r in rows) / len(rows), 4),
            "within_1": round(sum(e <= 1 for e in errors) / len(errors), 4),
            "pair_order": round(right / pairs, 4) if pairs else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: fewer ticks and agents")
    ap.add_argument("--seed", type=int, default=1, help="the first seed (scenarios run several: the next ones)")
    ap.add_argument("--horizon", type=int, default=HORIZON)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "seed": args.seed, "horizon": args.horizon, "scenarios": {}}
    for name, (options, ticks, seeds) in SCENARIOS.items():
        if args.quick:
            ticks, seeds = args.horizon + 10, 1
        runs, seconds = [], 0.0
        for seed in range(args.seed, args.seed + seeds):
            samples, acted, took = run(name, options, ticks, seed)
            runs.append((samples, acted))
            seconds += took
        result["scenarios"][name] = {"options": options, "ticks": ticks, "seeds": seeds, "seconds": round(seconds, 2),
                                     "turns": sum(len(v) for _, acted in runs for v in acted.values()),
                                     **score(runs, args.horizon)}
        print(f"[next_act] {name}: {seeds} x {ticks} ticks in {seconds:.1f} s", file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
