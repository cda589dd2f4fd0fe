"""Demonstrations: scenarios run with their scripted policies, every turn written down as
(chat messages -> the answer as compact JSON), the data a small model learns to play from.

A record is one JSON line: scenario, seed, tick, agent, persona style, request kind, the
chat messages exactly as the simulation built them, and the completion. Whole seeds go to
the held-out split (every `heldout_every`-th seed), so held-out prompts come from runs the
model never saw.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

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


@dataclass(frozen=True)
class DemoPlan:
    """Which scenarios to run, on which seeds, for how long, with how many agents."""

    scenarios: tuple[str, ...]
    seeds: int = 40
    ticks: int = 40
    agents: dict[str, int] | None = None  # per scenario; None: each scenario's default
    heldout_every: int = 10

    def split(self, seed: int) -> str:
        return "heldout" if seed % self.heldout_every == self.heldout_every - 1 else "train"


class _Recorder(ScriptedModel):
    """A scenario's scripted policy that writes down every turn it answers."""

    def __init__(self, policy: Callable[[Turn], Any], emit: Callable[[Turn, Any], None]):
        super().__init__(policy, ref="scripted")
        self.emit = emit

    def decide(self, turns):
        values = super().decide(turns)
        for turn, value in zip(turns, values, strict=True):
            self.emit(turn, value)
        return values


def run_demos(plan: DemoPlan, on_seed: Callable[[str, int], None] | None = None) -> Iterator[tuple[str, Demo]]:
    """(split, Demo) for every turn of every planned run."""
    for spec in plan.scenarios:
        policy = getattr(load_module(spec), "policy", None)
        if policy is None:
            raise ValueError(f"scenario {spec} has no scripted policy to learn from")
        for seed in range(plan.seeds):
            got: list[Demo] = []

            def emit(turn: Turn, value: Any, spec=spec, seed=seed, got=got) -> None:
                got.append(Demo(scenario=spec, seed=seed, tick=turn.world.tick, agent=turn.agent.id,
                                style=turn.agent.persona.style, kind=turn.request.kind,
                                messages=[dict(m) for m in turn.request.messages],
                                completion=msgspec.json.encode(value).decode()))

            options = {"agents": plan.agents[spec]} if plan.agents and spec in plan.agents else {}
            sim = Simulation.from_scenario(spec, model=_Recorder(policy, emit), seed=seed, **options)
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
    if progress:
        print(file=sys.stderr)
    return dict(counts)


def read_demos(path: str | Path) -> Iterable[Demo]:
    dec = msgspec.json.Decoder(Demo)
    with open(path, "rb") as f:
        for line in f:
            yield dec.decode(line)
