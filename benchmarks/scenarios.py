"""Scenario metrics with LLM agents against the scripted policy (the ceiling) and random actions
(the floor), side by side on the same seeds.

    .venv/bin/python benchmarks/scenarios.py                              # swarm-tiny, all four scenarios
    .venv/bin/python benchmarks/scenarios.py --model PATH --seeds 3 --ticks 30
    .venv/bin/python benchmarks/scenarios.py --scenarios support_desk --quick

Each scenario module names the metric that matters most (`MAIN_METRIC`, and whether higher is
better); the JSON has every numeric metric, the mean over seeds per policy, and for the main
metric where the model lands between floor and ceiling (`model_vs_floor`). `--card` prints the
markdown table the model card and README carry. Runs use seeds 1000.. by default: no demonstration
`swarm train` learns from comes from them (it plays seeds 0-59), so a model cannot have seen the
tickets, players or requests it is measured on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from swarm.model import EngineModel
from swarm.runtime import DEFAULT_MODEL, Engine
from swarm.scenario import load_module
from swarm.simulation import Simulation

SCENARIOS = ("village", "werewolf", "software_team", "support_desk")


def log(msg: str) -> None:
    print(f"[scenarios {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_one(spec: str, model, seed: int, ticks: int) -> dict:
    sim = Simulation.from_scenario(spec, model=model, seed=seed)
    t0 = time.perf_counter()
    report = sim.run(ticks)
    sim.close()
    metrics = {k: v for k, v in report.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics.update({k: float(v) for k, v in report.metrics.items() if isinstance(v, bool)})
    return {"seed": seed, "seconds": time.perf_counter() - t0, "metrics": metrics}


def compare(spec: str, engine: Engine | None, model_name: str, seeds: int, ticks: int,
            temperature: float = 0.7, first_seed: int = 1000) -> dict:
    module = load_module(spec)
    main, higher = getattr(module, "MAIN_METRIC", None), getattr(module, "HIGHER_IS_BETTER", True)
    policies = {"scripted": "scripted", "random": "random"}
    if engine is not None:
        policies = {"model": None, **policies}
    out: dict = {"main_metric": main, "higher_is_better": higher, "policies": {}}
    for name, model in policies.items():
        runs = []
        for seed in range(first_seed, first_seed + seeds):
            log(f"{spec}: {name} seed {seed}")
            m = EngineModel(engine, temperature=temperature, ref=model_name) if model is None else model
            runs.append(run_one(spec, m, seed, ticks))
        keys = sorted(set.intersection(*(set(r["metrics"]) for r in runs)))
        out["policies"][name] = {"runs": runs,
                                 "mean": {k: statistics.fmean(r["metrics"][k] for r in runs) for k in keys}}
    if main and "model" in out["policies"]:
        p = out["policies"]
        lo, hi, got = (p[n]["mean"].get(main) for n in ("random", "scripted", "model"))
        if None not in (lo, hi, got) and hi != lo:
            out["model_vs_floor"] = (got - lo) / (hi - lo)  # 0 = the floor, 1 = the ceiling
    return out


def card_table(results: dict) -> list[str]:
    rows = ["| scenario | metric | random (floor) | swarm-tiny | scripted (ceiling) |", "|---|---|---|---|---|"]
    for spec, r in results.items():
        main = r.get("main_metric")
        if not main:
            continue
        cells = [r["policies"].get(n, {}).get("mean", {}).get(main) for n in ("random", "model", "scripted")]
        rows.append(f"| {spec} | {main} | " + " | ".join("-" if c is None else f"{c:.3g}" for c in cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="a model folder or bundled name; 'none' skips the LLM")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=1000,
                   help="run seeds first-seed .. first-seed+seeds-1; the default stays clear of the seeds "
                        "`swarm train` demonstrates (0-59) and `select_model.py` chooses by (100-103)")
    p.add_argument("--ticks", type=int, default=30)
    p.add_argument("--temperature", type=float, default=0.7, help="the LLM agents' sampling temperature")
    p.add_argument("--quick", action="store_true", help="1 seed, 8 ticks")
    p.add_argument("--card", action="store_true", help="also print the markdown table on stderr")
    p.add_argument("--write-card", action="store_true",
                   help="put the table into the model folder's card (README.md, from training_summary.json)")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    seeds, ticks = (1, 8) if args.quick else (args.seeds, args.ticks)
    engine = None if args.model == "none" else Engine.from_pretrained(args.model)
    results = {spec: compare(spec, engine, args.model, seeds, ticks, args.temperature, args.first_seed)
               for spec in args.scenarios.split(",")}
    out = {"config": {"model": args.model, "seeds": seeds, "first_seed": args.first_seed, "ticks": ticks,
                      "temperature": args.temperature,
                      "torch": torch.__version__,
                      "threads": torch.get_num_threads()}, "scenarios": results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    table = card_table(results)
    if args.card:
        print("\n".join(table), file=sys.stderr)
    if args.write_card:
        last = args.first_seed + seeds - 1
        write_model_card(args.model, table, f"seeds {args.first_seed}-{last} x {ticks} ticks, default agents")


def write_model_card(model: str, table: list[str], setting: str) -> None:
    from pathlib import Path

    from swarm.runtime import model_path
    from swarm.train.card import write_card

    folder = Path(model_path(model))
    summary = json.loads((folder / "training_summary.json").read_text())
    summary["evaluation"] = [f"`benchmarks/scenarios.py` ({setting}; means over seeds):", "", *table]
    (folder / "training_summary.json").write_text(json.dumps(summary, indent=2))
    write_card(folder, summary, summary.get("command", "swarm train"))


if __name__ == "__main__":
    main()
