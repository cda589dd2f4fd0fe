"""Support-desk routing on held-out triage turns, as the simulation serves them: queue and priority
accuracy of the model's Routes against the tickets' hidden truth, and the teacher-forced queue choice
(see `swarm.scenarios.support_desk.probe`).

    .venv/bin/python benchmarks/routing_probe.py                         # swarm-tiny, 120 turns
    .venv/bin/python benchmarks/routing_probe.py --model build/tiny3/model --cases 60 --temperature 0
    .venv/bin/python benchmarks/routing_probe.py --model path/to/hf_folder --choice-only   # the queue choice alone

`--choice-only` skips the sampled answers (minutes per turn for a model that writes long notes on 2 cores) and
the copy probe: the teacher-forced queue choice is what says whether a model can route at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from swarm.runtime import DEFAULT_MODEL, Engine
from swarm.scenarios.support_desk.probe import heldout_seeds, queue_choice, routing_probe, triage_cases


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="a model folder or bundled name")
    p.add_argument("--cases", type=int, default=120, help="triage turns to ask about")
    p.add_argument("--seeds", type=int, default=6, help="held-out support_desk runs to take them from")
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.7, help="as the simulation samples (0: greedy)")
    p.add_argument("--choice-only", action="store_true", help="only the teacher-forced queue choice")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    engine = Engine.from_pretrained(args.model)
    seeds = heldout_seeds(args.seeds)
    cases = triage_cases(seeds, args.ticks, set(engine.adapters()), limit=args.cases)
    if args.choice_only:
        from swarm.scenarios.support_desk import CATEGORIES

        result = {"cases": len(cases), "chance": 1 / len(CATEGORIES), **queue_choice(engine, cases)}
    else:
        result = routing_probe(engine, cases, args.temperature)
    out = {"config": {"model": args.model, "seeds": seeds, "ticks": args.ticks, "torch": torch.__version__,
                      "threads": torch.get_num_threads()},
           **result, "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    sampled = "" if args.choice_only else (f"queue accuracy {result['queue_accuracy']:.3f} over {result['routed']} "
                                           "routes; ")
    print(f"{sampled}teacher-forced {result['queue_choice_accuracy']:.3f} over {result['cases']} turns (chance "
          f"{result['chance']:.2f})", file=sys.stderr)


if __name__ == "__main__":
    main()
