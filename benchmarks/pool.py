"""Runtime workers on the broker, measured: what the broker costs a turn, what persona affinity saves, and how
fast a pool gets over a killed worker.

    .venv/bin/python benchmarks/pool.py --output benchmarks/results/pool-cpu.json      # ~5 minutes on 2 cores

Sections (a Mosquitto on a free loopback port; workers are `swarm worker` processes on swarm-tiny):

overhead: the village (12 agents) in process, then through a pool of one worker on the same machine, taking
turns --repeat times; seconds per tick and the per-turn difference, as a share of an in-process turn.

affinity: the village at --agents agents on two workers, each persona's turns sent to its owner (rendezvous
hashing) against each turn sent to a worker drawn at random: prefix-cache hit rate, prompt tokens recomputed
and seconds per tick, beside one in-process engine.

failover: the village on three workers; one is killed (SIGKILL) during a tick. Time from the kill until the
simulation has noticed and re-sent its turns, until the last of them is answered, and whether the run's events
equal an in-process run's (no turn lost or changed).

The machine's matmul rate and memory bandwidth are measured in the same run. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER_ARGS = ["--model", "swarm-tiny", "--kv-memory", "1GiB"]


def log(msg: str) -> None:
    print(f"[pool {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Workers:
    """`swarm worker` processes of one pool, started and stopped together."""

    def __init__(self, broker_url: str, pool: str, folder: Path):
        self.url, self.pool, self.folder = broker_url, pool, folder
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, *ids: str) -> None:
        for id in ids:
            out = (self.folder / f"{self.pool}-{id}.log").open("w")
            self.procs[id] = subprocess.Popen([sys.executable, "-m", "swarm.cli", "worker", "--bus", self.url,
                                               "--pool", self.pool, "--id", id, *WORKER_ARGS], stdout=out,
                                              stderr=subprocess.STDOUT)
        for id in ids:
            deadline = time.monotonic() + 120
            while "serving pool" not in (self.folder / f"{self.pool}-{id}.log").read_text():
                if self.procs[id].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.folder / f"{self.pool}-{id}.log").read_text())
                time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def village(model, agents: int, ticks: int, on_tick=None) -> dict:
    """Run the village on `model` (a TurnModel); seconds per tick after the first, its events, the model's stats."""
    from swarm import Simulation

    sim = Simulation.from_scenario("village", model=model, seed=0, agents=agents)
    times, events, turns = [], [], 0
    for t in range(ticks):
        t0 = time.perf_counter()
        before = sim.counters["turns"]
        events += [msg for msg in sim.tick()]
        times.append(time.perf_counter() - t0)
        turns += sim.counters["turns"] - before if t else 0
        if on_tick is not None:
            on_tick(t)
    sim.close()
    rest = times[1:] or times
    return {"s_per_tick": statistics.median(rest), "turns_after_first": turns, "seconds_after_first": sum(rest),
            "events": [e.text for e in events], "stats": model.stats()}


def local_model():
    from swarm.model import EngineModel
    from swarm.runtime import Engine, EngineConfig

    return EngineModel(Engine.from_pretrained("swarm-tiny", config=EngineConfig(kv_memory="1GiB")), ref="swarm-tiny")


def overhead(broker, folder: Path, args) -> dict:
    from swarm.pool import PoolModel

    workers = Workers(broker.url, "overhead", folder)
    workers.start("w0")
    local, pool = [], []
    try:
        for r in range(args.repeat):
            log(f"overhead round {r + 1}: in process")
            local.append(village(local_model(), 12, args.ticks))
            log(f"overhead round {r + 1}: one worker")
            model = PoolModel(f"{broker.url}/overhead")
            pool.append(village(model, 12, args.ticks))
            model.close()
    finally:
        workers.stop()
    per_turn = [(p["seconds_after_first"] - lo["seconds_after_first"]) / max(1, lo["turns_after_first"])
                for lo, p in zip(local, pool, strict=True)]
    turn = [lo["seconds_after_first"] / max(1, lo["turns_after_first"]) for lo in local]
    return {"agents": 12, "ticks": args.ticks, "rounds": args.repeat,
            "in_process_s_per_tick": [round(x["s_per_tick"], 3) for x in local],
            "one_worker_s_per_tick": [round(x["s_per_tick"], 3) for x in pool],
            "in_process_s_per_turn": round(statistics.median(turn), 4),
            "overhead_s_per_turn": round(statistics.median(per_turn), 4),
            "overhead_share_of_a_turn": round(statistics.median(per_turn) / statistics.median(turn), 3),
            "same_events": all(p["events"] == lo["events"] for lo, p in zip(local, pool, strict=True))}


def affinity(broker, folder: Path, args) -> dict:
    from swarm.pool import PoolModel

    out = {"agents": args.agents, "ticks": args.affinity_ticks, "workers": 2}
    log(f"affinity: {args.agents} agents in process")
    one = village(local_model(), args.agents, args.affinity_ticks)
    out["in_process"] = _summary(one)
    for mode in ("affinity", "random"):
        workers = Workers(broker.url, f"aff-{mode}", folder)  # fresh workers: cold caches for each mode
        workers.start("w0", "w1")
        try:
            log(f"affinity: {args.agents} agents on two workers, {mode} dispatch")
            model = PoolModel(f"{broker.url}/aff-{mode}", affinity=mode == "affinity")
            run = village(model, args.agents, args.affinity_ticks)
            model.close()
        finally:
            workers.stop()
        out[mode] = {**_summary(run), "same_events": run["events"] == one["events"]}
    return out


def _summary(run: dict) -> dict:
    s = run["stats"]
    prompt = s.get("prompt_tokens", 0)
    cached = s.get("cached_tokens", 0)
    return {"s_per_tick": round(run["s_per_tick"], 3), "prefix_cache_hit_rate": round(cached / prompt, 4) if prompt
            else None, "prompt_tokens": prompt, "tokens_recomputed": prompt - cached}


def failover(broker, folder: Path, args) -> dict:
    from swarm.pool import PoolModel

    log("failover: the village in process (the events to match)")
    reference = village(local_model(), 12, args.ticks)
    workers = Workers(broker.url, "failover", folder)
    workers.start("w0", "w1", "w2")
    model = PoolModel(f"{broker.url}/failover")
    killed = {}

    def kill_during_next_tick(t: int) -> None:
        if t == args.ticks // 2 - 1:
            victim = sorted(model.workers)[1]

            def later():  # the next tick's turns are on their way after a few milliseconds
                time.sleep(0.15)
                workers.procs[victim].kill()
                killed.update(worker=victim, at=time.monotonic())

            threading.Thread(target=later, daemon=True).start()

    try:
        log("failover: three workers, one killed mid-tick")
        run = village(model, 12, args.ticks, on_tick=kill_during_next_tick)
    finally:
        model.close()
        workers.stop()
    lost = [f for f in model.failovers if f["worker"] == killed.get("worker")]
    f = lost[0] if lost else {}
    return {"agents": 12, "ticks": args.ticks, "killed": killed.get("worker"),
            "noticed_after_s": round(f["noticed"] - killed["at"], 3) if f else None,
            "turns_resent": f.get("resent", 0),
            "resent_after_s": round(f["resent_at"] - killed["at"], 3) if "resent_at" in f else None,
            "answered_after_s": round(f["answered_at"] - killed["at"], 3) if "answered_at" in f else None,
            "same_events": run["events"] == reference["events"], "turns_lost": 0 if run["events"] == reference[
                "events"] else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="hardware,overhead,affinity,failover")
    p.add_argument("--ticks", type=int, default=10, help="ticks of the 12-agent runs")
    p.add_argument("--repeat", type=int, default=3, help="rounds of the overhead comparison (medians)")
    p.add_argument("--agents", type=int, default=200, help="agents of the affinity comparison")
    p.add_argument("--affinity-ticks", type=int, default=4)
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args()
    from swarm.bus.broker import Mosquitto

    sys.path.insert(0, str(HERE))
    import roofline

    sections = args.sections.split(",")
    out = {"benchmark": "pool", "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                            "processor": platform.processor()},
           "load_avg_before": os.getloadavg()[0]}
    if "hardware" in sections:
        out["hardware"] = {**roofline.memory_bandwidth(), **roofline.matmul_flops()}
    with tempfile.TemporaryDirectory(prefix="swarm-pool-bench-") as tmp, Mosquitto(Path(tmp)) as broker:
        for name, fn in (("overhead", overhead), ("affinity", affinity), ("failover", failover)):
            if name in sections:
                out[name] = fn(broker, Path(tmp), args)
                log(f"{name}: {json.dumps(out[name])}")
    out["load_avg_after"] = os.getloadavg()[0]
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
