"""Demonstrations: scenarios run with their scripted policies, every turn written down as
(chat messages -> the answer as compact JSON), the data a small model learns to play from.

A record is one JSON line: scenario, seed, tick, agent, persona style, request kind, the
chat messages exactly as the simulation built them, and the completion. Whole seeds go to
the held-out split (every `heldout_every`-th seed), so held-out prompts come from runs the
model never saw.

Exploration (`DemoPlan.explore`): a scripted policy never errs, so runs played by it alone never show
what follows a mistake (a misrouted ticket coming back, a backlog, a wasted vote), and a model trained
on them alone meets those situations first when it is playing, and then does worse after every slip
of its own. In training runs, a share of act turns therefore plays a random action of the turn's
schema instead, while the demonstration keeps the policy's answer (noise injected into the teacher's
runs, as DART does): the world wanders off the teacher's path and the teacher shows the way back.
Held-out runs are never explored, so held-out loss measures the same prompts whatever `explore` is.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from swarm.agents import TurnKind
from swarm.baselines import random_policy
from swarm.model import ScriptedModel, Turn
from swarm.scenario import load_module
from swarm.simulation import Simulation


class Demo(msgspec.Struct, kw_only=True):
    scenario: str
    seed: int
    tick: int
    agent: str
    style: str | None
    kind: str
    messages: list[dict[str, str]]
    completion: str
    played: str | None = None  # what the run played instead of `completion` (an explored turn), if anything


@dataclass(frozen=True)
class DemoPlan:
    """Which scenarios to run, on which seeds, for how long, with how many agents."""

    scenarios: tuple[str, ...]
    seeds: int = 40
    ticks: int = 40
    agents: dict[str, int] | None = None  # per scenario; None: each scenario's default
    heldout_every: int = 10
    explore: float = 0.0  # share of act turns in training runs that play a random action instead

    def split(self, seed: int) -> str:
        return "heldout" if seed % self.heldout_every == self.heldout_every - 1 else "train"


class _Recorder(ScriptedModel):
    """A scenario's scripted policy that writes down every turn it answers, and plays a random action
    instead of its answer in an `explore` share of act turns."""

    def __init__(self, policy: Callable[[Turn], Any], emit: Callable[[Turn, Any, Any], None], explore: float = 0.0):
        super().__init__(policy, ref="scripted")
        self.emit, self.explore = emit, explore

    def decide(self, turns):
        values = super().decide(turns)
        played = []
        for turn, value in zip(turns, values, strict=True):
            acting = turn.request.kind == TurnKind.ACT
            explored = acting and random.Random(f"explore:{turn.seed}").random() < self.explore
            instead = random_policy(turn) if explored else None
            self.emit(turn, value, instead)
            played.append(value if instead is None else instead)
        return played


def run_demos(plan: DemoPlan, on_seed: Callable[[str, int], None] | None = None) -> Iterator[tuple[str, Demo]]:
    """(split, Demo) for every turn of every planned run."""
    for spec in plan.scenarios:
        policy = getattr(load_module(spec), "policy", None)
        if policy is None:
            raise ValueError(f"scenario {spec} has no scripted policy to learn from")
        for seed in range(plan.seeds):
            got: list[Demo] = []

            def emit(turn: Turn, value: Any, instead: Any, spec=spec, seed=seed, got=got) -> None:
                got.append(Demo(scenario=spec, seed=seed, tick=turn.world.tick, agent=turn.agent.id,
                                style=turn.agent.persona.style, kind=turn.request.kind,
                                messages=[dict(m) for m in turn.request.messages],
                                completion=msgspec.json.encode(value).decode(),
                                played=None if instead is None else msgspec.json.encode(instead).decode()))

            options = {"agents": plan.agents[spec]} if plan.agents and spec in plan.agents else {}
            explore = plan.explore if plan.split(seed) == "train" else 0.0
            sim = Simulation.from_scenario(spec, model=_Recorder(policy, emit, explore), seed=seed, **options)
            for _ in range(plan.ticks):
                sim.tick()
                yield from ((plan.split(seed), d) for d in got)
                got.clear()
            sim.close()
            if on_seed is not None:
                on_seed(spec, seed)


def write_demos(plan: DemoPlan, out: str | Path, progress: bool = True) -> dict:
    """Write `train.jsonl` and `heldout.jsonl` under `out`; returns counts by split, scenario and style."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    enc = msgspec.json.Encoder()
    counts: Counter[str] = Counter()
    total = len(plan.scenarios) * plan.seeds

    def tick(spec: str, seed: int) -> None:
        counts["runs"] += 1
        if progress:
            print(f"\rdemonstrations: {counts['runs']}/{total} runs ({spec} seed {seed})", end="",
                  file=sys.stderr, flush=True)

    with open(out / "train.jsonl", "wb") as train, open(out / "heldout.jsonl", "wb") as heldout:
        files = {"train": train, "heldout": heldout}
        for split, demo in run_demos(plan, tick):
            files[split].write(enc.encode(demo) + b"\n")
            counts[split] += 1
            counts[f"{split}.{demo.scenario}"] += 1
            counts[f"{split}.style.{demo.style}"] += 1
            counts[f"{split}.explored"] += demo.played is not None
    if progress:
        print(file=sys.stderr)
    return dict(counts)


def read_demos(path: str | Path) -> Iterable[Demo]:
    dec = msgspec.json.Decoder(Demo)
    with open(path, "rb") as f:
        for line in f:
            yield dec.decode(line)
