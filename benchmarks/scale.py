"""The persona cache at swarm scale: bundled scenarios at 12 to 5,000 agents on swarm-tiny, and planner hints
against LRU under a pool of half the working set.

    .venv/bin/python benchmarks/scale.py --output benchmarks/results/scale-cpu.json     # about 45 min on 2 cores
    .venv/bin/python benchmarks/scale.py --quick                                        # a smoke run, ~2 min

Every configuration runs in a child process of its own (so peak RSS is its own) on the engine's defaults: a KV
pool sized to the machine, the second tier, the planner's hints. Sections:

scale: village and support_desk at 12, 1,000 and 5,000 agents: seconds per tick (the first, cold tick apart
from the rest), agent-turns/s, prefix-cache hit rate (overall and after the first tick), prompt tokens
recomputed, personas with KV resident at the end, peak RSS. The 12-agent run of each scenario is the
reference for the ratio the issue asks for (agent-turns/s at 1,000 over 12).

pressure: the village at --pressure-agents agents, first with an unbounded pool (which measures the working
set: every persona's latest prompt and answer, what its next turn can reuse), then with a pool of half that:
LRU (no hints, no tier: evicted KV is gone), hints without a tier, LRU with the tier, and hints with the tier and
prefetch. Ticks/s of each, side by side.

hardware: memory bandwidth and matmul FLOP/s measured in the same run, the limits the figures sit under.
Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def revision() -> str | None:
    """The commit measured ('+dirty' with uncommitted changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def resident_personas(engine) -> int:
    """Personas with at least one KV block in the pool (not only in the tier)."""
    seen, stack = set(), [n for r in engine.cache.roots.values() for n in r.children.values()]
    while stack:
        n = stack.pop()
        if n.resident:
            seen |= n.personas
            stack.extend(n.children.values())
    return len(seen)


def run_one(spec: dict) -> dict:
    """One configuration, in this process: build the scenario on swarm-tiny, run its ticks, measure."""
    from swarm import Simulation
    from swarm.model import EngineModel
    from swarm.runtime import Engine, EngineConfig

    class NoHints(EngineModel):
        def hint(self, persona, next_use):  # LRU: the cache hears nothing of who acts next
            pass

        def prefetch(self):
            pass

    torch.manual_seed(0)
    config = EngineConfig(**spec.get("engine", {}))
    engine = Engine.from_pretrained("swarm-tiny", config=config)
    model = (NoHints if spec.get("hints", True) is False else EngineModel)(engine, ref="swarm-tiny")
    latest = {}  # persona -> its latest request's handle: the KV its next turn can reuse
    submit = engine.submit

    def remember(prompt, params=None, persona=None, *args, **kwargs):
        handle = submit(prompt, params, persona, *args, **kwargs)
        latest[persona] = handle
        return handle

    engine.submit = remember
    sim = Simulation.from_scenario(spec["scenario"], model=model, seed=spec.get("seed", 0), agents=spec["agents"])
    ticks, peak_blocks, first = [], 0, None
    for t in range(spec["ticks"]):
        turns0 = sim.counters["turns"]
        t0 = time.perf_counter()
        sim.tick()
        ticks.append((time.perf_counter() - t0, sim.counters["turns"] - turns0))
        s = engine.stats()
        peak_blocks = max(peak_blocks, s["kv_blocks_used"])
        if t == 0:
            first = dict(s)
        log(f"  {spec['scenario']} {spec['agents']} agents tick {t}: {ticks[-1][0]:.1f} s, {ticks[-1][1]} turns, "
            f"hit rate {s['prefix_cache_hit_rate']:.3f}")
    s = engine.stats()
    rest = ticks[1:] or ticks
    prompt, cached = s["prompt_tokens"] - first["prompt_tokens"], s["cached_tokens"] - first["cached_tokens"]
    out = {
        **{k: spec[k] for k in ("scenario", "agents", "ticks")}, "mode": spec.get("mode"),
        "first_tick_s": round(ticks[0][0], 2),
        "s_per_tick": round(statistics.median(t for t, _ in rest), 2),
        "turns_per_tick": round(statistics.mean(n for _, n in rest), 1),
        "agent_turns_per_s": round(sum(n for _, n in rest) / sum(t for t, _ in rest), 2),
        "ticks_per_s": round(len(rest) / sum(t for t, _ in rest), 4),
        "hit_rate": round(s["prefix_cache_hit_rate"], 4),
        "hit_rate_after_first_tick": round(cached / prompt, 4) if prompt else None,
        "prompt_tokens": s["prompt_tokens"],
        "tokens_recomputed": s["prompt_tokens"] - s["cached_tokens"] + s["recomputed_tokens"],
        "preemptions": s["preemptions"],
        "kv_blocks_peak": peak_blocks, "kv_blocks_total": s["kv_blocks_total"], "block_size": s["block_size"],
        "kv_blocks_restored": s["kv_blocks_restored"], "kv_blocks_prefetched": s["kv_blocks_prefetched"],
        "kv_blocks_dropped": s["kv_blocks_dropped"],
        "resident_personas": resident_personas(engine),
        # the live working set: every persona's latest prompt and answer, what its next turn can start from
        "working_set_tokens": sum(len(h.result().prompt_token_ids) + len(h.result().token_ids)
                                  for h in latest.values()),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "memory": engine.memory_summary(),
    }
    sim.close()
    return out


def child(spec: dict, timeout: float) -> dict:
    """`run_one` in a fresh process (its own peak RSS); an error or a timeout is reported, not raised."""
    log(f"{spec.get('mode') or 'default'}: {spec['scenario']} at {spec['agents']} agents, {spec['ticks']} ticks")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-P", str(Path(__file__).resolve()), "--one", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    sys.stderr.write("".join(line + "\n" for line in p.stderr.splitlines() if line.startswith("[scale")))
    if p.returncode:
        return {**spec, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    log(f"  done in {time.perf_counter() - t0:.0f} s: {out['s_per_tick']} s/tick, {out['agent_turns_per_s']} "
        f"turns/s, hit rate after tick 0 {out['hit_rate_after_first_tick']}")
    return out


def scale_section(args) -> dict:
    runs = []
    for scenario in ("village", "support_desk"):
        for n in args.agents:
            ticks = args.ticks_small if n <= 100 else args.ticks_large if n <= 2000 else args.ticks_huge
            runs.append(child({"scenario": scenario, "agents": n, "ticks": ticks}, args.timeout))
    ratios = {}
    for scenario in ("village", "support_desk"):
        mine = {r["agents"]: r for r in runs if r["scenario"] == scenario and "error" not in r}
        base = mine.get(min(args.agents))
        for n, r in mine.items():
            if base is not None and n != base["agents"]:
                ratios[f"{scenario}_{n}_over_{base['agents']}_turns_per_s"] = round(
                    r["agent_turns_per_s"] / base["agent_turns_per_s"], 2)
    return {"runs": runs, "ratios": ratios}


def pressure_section(args) -> dict:
    """The modes run in rounds (every mode once a round, interleaved), and each is summed up by its median
    ticks/s over the rounds: on a shared machine one run apiece moves by 10-20%."""
    base = {"scenario": "village", "agents": args.pressure_agents, "ticks": args.pressure_ticks}
    first = child({**base, "mode": "unbounded"}, args.timeout)
    if "error" in first:
        return {"unbounded": first}
    half = first["working_set_tokens"] // 2
    modes = {"unbounded": {}, "lru": {"hints": False, "engine": {"kv_tier_memory": 0}},
             "hints": {"engine": {"kv_tier_memory": 0}}, "lru_and_tier": {"hints": False}, "hints_and_tier": {}}
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    runs["unbounded"].append(first)
    for r in range(args.pressure_repeats):
        for mode, extra in modes.items():
            if mode == "unbounded" and r == 0:
                continue
            engine = {**({} if mode == "unbounded" else {"kv_cache_tokens": half}), **extra.get("engine", {})}
            runs[mode].append(child({**base, **extra, "engine": engine, "mode": mode}, args.timeout))
    speed = {m: statistics.median(x["ticks_per_s"] for x in rs if "error" not in x)
             for m, rs in runs.items() if any("error" not in x for x in rs)}
    ratio = {}
    if "lru" in speed:
        for m in ("hints", "lru_and_tier", "hints_and_tier", "unbounded"):
            if m in speed:
                ratio[f"{m}_over_lru_ticks_per_s"] = round(speed[m] / speed["lru"], 2)
    if "hints_and_tier" in speed and "unbounded" in speed:
        ratio["hints_and_tier_over_unbounded_ticks_per_s"] = round(speed["hints_and_tier"] / speed["unbounded"], 2)
    return {"working_set_tokens": first["working_set_tokens"], "pool_tokens": half, "rounds": args.pressure_repeats,
            "median_ticks_per_s": {m: round(v, 4) for m, v in speed.items()}, "ratios": ratio, "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--sections", default="hardware,scale,pressure")
    p.add_argument("--agents", type=lambda s: [int(x) for x in s.split(",")], default=[12, 1000, 5000])
    p.add_argument("--ticks-small", type=int, default=8, help="ticks of runs up to 100 agents")
    p.add_argument("--ticks-large", type=int, default=4, help="ticks of runs up to 2,000 agents")
    p.add_argument("--ticks-huge", type=int, default=2, help="ticks of larger runs")
    p.add_argument("--pressure-agents", type=int, default=120)
    p.add_argument("--pressure-ticks", type=int, default=8)
    p.add_argument("--pressure-repeats", type=int, default=3, help="rounds of the pressure modes (medians)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one configuration may take")
    p.add_argument("--output", help="also write the JSON here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.quick:
        args.agents, args.ticks_small, args.ticks_large = [6, 24], 2, 2
        args.pressure_agents, args.pressure_ticks, args.pressure_repeats = 12, 3, 1
    sys.path.insert(0, str(HERE))  # roofline.py beside this file (no file here shadows a package: see tests)
    import roofline

    sections = args.sections.split(",")
    out = {"benchmark": "scale", "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                             "cpus": torch.get_num_threads(), "processor": platform.processor()},
           "quick": args.quick, "revision": revision()}
    if "hardware" in sections:
        out["hardware"] = {**roofline.memory_bandwidth(), **roofline.matmul_flops()}
    if "scale" in sections:
        out["scale"] = scale_section(args)
    if "pressure" in sections:
        out["pressure"] = pressure_section(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
