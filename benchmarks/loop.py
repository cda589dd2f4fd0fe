"""The simulation loop's own cost, and the bus's throughput.

    .venv/bin/python benchmarks/loop.py                  # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/loop.py --quick          # a smoke run

loop: a village of N agents (10 per place) whose scripted policy talks, moves and
waits at random, so most agents act every tick. The model's time (its `decide` and
`embed` calls) is timed apart and taken out: what is left is the loop (delivery,
planning, memory retrieval, prompt building, resolution, observation, recording,
publishing on the bus, cache hints), reported in milliseconds per acting agent per
tick. Target: <= 1 ms at 100 and at 1,000 agents.

bus: messages/s through LocalBus and through MqttBus with a Mosquitto broker on
loopback (started here when the binary is installed), msgpack and JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm import Persona, ScriptedModel, Simulation  # noqa: E402
from swarm.agents.actions import Insight, Move, PlanUpdate, Say, Wait  # noqa: E402


def log(msg: str) -> None:
    print(f"[loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def policy(turn):
    rng = random.Random(turn.seed)
    kind = turn.request.kind
    if kind == "plan":
        return PlanUpdate(steps=["walk about", "talk to people"])
    if kind == "reflect":
        return Insight(text="the village is busy today")
    roll = rng.random()
    here = turn.world.place_of(turn.agent.id)
    if roll < 0.3:
        return Say(text=f"news number {rng.randrange(1000)} from the {here}")
    if roll < 0.45:
        return Move(to=rng.choice(list(turn.world.graph.neighbors(here))))
    return Wait()


class TimedModel(ScriptedModel):
    """The scripted policy, with the time spent in the model's own calls added up."""

    def __init__(self):
        super().__init__(policy, ref="scripted-bench")
        self.seconds = 0.0

    def decide(self, turns):
        t0 = time.perf_counter()
        try:
            return super().decide(turns)
        finally:
            self.seconds += time.perf_counter() - t0

    def embed(self, texts):
        t0 = time.perf_counter()
        try:
            return super().embed(texts)
        finally:
            self.seconds += time.perf_counter() - t0


def village(n: int, record: Path | None) -> tuple[Simulation, TimedModel]:
    model = TimedModel()
    sim = Simulation(model, seed=0, name=f"bench{n}", record=record)
    places = [f"place{i}" for i in range(max(1, n // 10))]
    for p in places:
        sim.world.add_place(p)
    for a, b in zip(places, places[1:] + places[:1], strict=True):
        if a != b:
            sim.world.connect(a, b, minutes=1)
    for i in range(n):
        sim.add_agent(Persona(name=f"agent{i}", role="villager", traits="busy"), at=places[i % len(places)])
    return sim, model


def measure_loop(n: int, ticks: int, warm: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sim, model = village(n, Path(tmp) / "log.jsonl")
        for _ in range(warm):
            sim.tick()
        model.seconds = 0.0
        turns0, events0 = sim.counters["turns"], sim.counters["events"]
        t0 = time.perf_counter()
        for _ in range(ticks):
            sim.tick()
        wall = time.perf_counter() - t0
        turns, events = sim.counters["turns"] - turns0, sim.counters["events"] - events0
        sim.close()
    loop = wall - model.seconds
    return {"agents": n, "ticks": ticks, "seconds": wall, "model_seconds": model.seconds, "loop_seconds": loop,
            "turns_per_tick": turns / ticks, "events_per_tick": events / ticks,
            "loop_ms_per_agent_tick": 1e3 * loop / (n * ticks),
            "loop_ms_per_turn": 1e3 * loop / max(turns, 1),
            "target": "<= 1 ms per agent per tick", "meets_target": 1e3 * loop / (n * ticks) <= 1.0}


def measure_buses(messages: int) -> dict:
    import bus as busbench

    out = {"local_msgpack": busbench.measure(None, messages)}
    broker = None
    try:
        broker = busbench.start_broker()
    except Exception as e:  # no mosquitto here: say so in the JSON rather than fail the loop figures
        out["mqtt"] = {"skipped": f"no broker: {e}"}
        return out
    try:
        out["mqtt_msgpack"] = busbench.measure(broker.url, messages)
        out["mqtt_json"] = busbench.measure(broker.url + "?format=json", messages)
    finally:
        broker.close()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default="loop,bus")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))
    result: dict = {"config": {"quick": args.quick, "python": platform.python_version(), "torch": torch.__version__,
                               "cpu_count": torch.get_num_threads()}}
    if "loop" in sections:
        result["loop"] = {}
        for n, ticks in ((100, 5), (1000, 3)) if args.quick else ((100, 20), (1000, 10)):
            log(f"loop: {n} agents, {ticks} ticks")
            result["loop"][f"agents_{n}"] = measure_loop(n, ticks)
        result["loop"]["meets_target"] = all(r["meets_target"] for r in result["loop"].values()
                                              if isinstance(r, dict))
    if "bus" in sections:
        log("bus: LocalBus and MqttBus throughput")
        result["bus"] = measure_buses(2000 if args.quick else 20000)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
