"""Teach the auction's traders to bid: record demonstrations, tune a LoRA adapter, use it.

    python examples/teach_persona.py                 # about 4 minutes on 2 CPU cores
    python examples/teach_persona.py --steps 30      # quicker, and weaker

1. record: the scripted traders of examples/auction.py play `--seeds` seeds, and only their bids and offers
   that went through are kept (the scripted play mostly waits: a model tuned on all of it learns to wait);
2. tune: a LoRA adapter for swarm-tiny on those demonstrations (what `swarm train adapter` runs; needs the
   `train` extra: pip install 'swarm-sim[train]');
3. use: an unseen seed played by swarm-tiny without the adapter, then with it on every agent.

Your own turns are demonstrations too: `swarm run examples/auction.py --play Bram --record-demos mine.jsonl`
lets you bid as Bram in the TUI, and every answer you give is written down.
"""

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from swarm import Simulation
from swarm.demonstrations import read_demos
from swarm.model import EngineModel
from swarm.runtime import Engine
from swarm.train.adapter import AdapterRecipe, print_progress, train_adapter

AUCTION = str(Path(__file__).with_name("auction.py"))


def record(path: Path, seeds: int, ticks: int) -> None:
    for seed in range(seeds):
        sim = Simulation.from_scenario(AUCTION, model="scripted", seed=seed, bus=None)
        sim.record_demos(path, successful_only=True, kinds=["act"], actions=["bid", "offer"], append=True)
        sim.run(ticks)
        sim.close()


def play(adapter: Path | None, seed: int, ticks: int) -> dict:
    """The auction's metrics on swarm-tiny, greedy, with `adapter` on every agent (None: the base model)."""
    engine = Engine.from_pretrained("swarm-tiny")
    if adapter is not None:
        engine.add_adapter("trader", adapter)
    sim = Simulation.from_scenario(AUCTION, model=EngineModel(engine, temperature=0.0), seed=seed, bus=None)
    if adapter is not None:
        for agent in sim.agents:
            sim.use_adapter(agent, "trader")
    metrics = sim.run(ticks).metrics
    sim.close()
    return {"trades": metrics["trades"], "bids": metrics["bids"], "fails": metrics["events_by_kind"].get("fail", 0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=16, help="scripted seeds recorded (16)")
    p.add_argument("--ticks", type=int, default=30, help="ticks per recorded seed (30)")
    p.add_argument("--steps", type=int, default=150, help="adapter training steps (150)")
    p.add_argument("--play-ticks", type=int, default=20, help="ticks of the unseen seed played (20)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        demos, adapter = Path(tmp) / "demos.jsonl", Path(tmp) / "trader"
        record(demos, args.seeds, args.ticks)
        kept = read_demos(demos)
        chosen = Counter(json.loads(d.messages[-1]["content"])["type"] for d in kept)
        print(f"1. recorded {len(kept)} demonstrations: {dict(chosen)}")
        summary = train_adapter("swarm-tiny", [demos], adapter, AdapterRecipe(steps=args.steps, seed=0),
                                progress=print_progress)
        print(f"2. tuned: held-out loss {summary['heldout_loss_before']:.2f} -> {summary['heldout_loss_after']:.2f} "
              f"nats/token (best at step {summary['best_step']})")
        print(f"3. seed 1000, {args.play_ticks} ticks: without the adapter {play(None, 1000, args.play_ticks)}")
        print(f"   with it: {play(adapter, 1000, args.play_ticks)}")


if __name__ == "__main__":
    main()
