"""Record demonstrations from a run: every answered turn as a line of chat fine-tuning data.

    python examples/record_demos.py             # the village's scripted policy, 10 ticks, into demos.jsonl
    python examples/record_demos.py --model swarm-tiny --out tiny.jsonl

Each line holds the messages the model was given, the answer as written, and what the turn was (scenario,
agent, tick, persona, adapter, model, the answer's schema). Only act turns whose action went through are
kept here (`successful_only`), the data to tune a persona on.
"""

import argparse
import json
from collections import Counter

from swarm import Simulation
from swarm.demonstrations import read_demos


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="village")
    p.add_argument("--model", default="scripted", help="scripted (the scenario's policy), swarm-tiny, a folder, ...")
    p.add_argument("--ticks", type=int, default=10)
    p.add_argument("--out", default="demos.jsonl")
    args = p.parse_args()

    sim = Simulation.from_scenario(args.scenario, model=args.model, seed=1, bus=None)
    sim.record_demos(args.out, successful_only=True, kinds=["act"], append=True)
    sim.run(args.ticks)
    sim.close()

    demos = read_demos(args.out)
    print(f"{len(demos)} demonstrations in {args.out}; by agent: {dict(Counter(d.agent for d in demos))}")
    last = demos[-1]
    print(f"the last one ({last.agent} at tick {last.tick}) ends:")
    for m in last.messages[-2:]:
        print(f"  {m['role']}: {json.dumps(m['content'])[:160]}")


if __name__ == "__main__":
    main()
