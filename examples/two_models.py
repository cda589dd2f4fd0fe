"""A manager on one model, the crowd on another: the software team's product manager on MANAGER, the rest of
the team on swarm-tiny.

    python examples/two_models.py                                          # the manager: the scenario's own policy
    python examples/two_models.py --manager openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-0.6B   # e.g. vLLM
    python examples/two_models.py --manager path/to/hf_folder --ticks 30

MANAGER is anything `model=` takes: a model folder, a bundled name, `openai:BASE_URL#MODEL`, a pool's
`mqtt://host:port/POOL`, or `scripted` (default: the scenario's scripted policy, a stand-in for a bigger model
that plays the role well; nothing to install). Each tick the manager's turns go to its model and the crowd's
to swarm-tiny, both at once; the report says how many turns and tokens each model took.
"""

import argparse
import json

from swarm import Simulation

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--manager", default="scripted", help="the manager's model (default: scripted)")
parser.add_argument("--ticks", type=int, default=20)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()

sim = Simulation.from_scenario("software_team", model="swarm-tiny", seed=args.seed)
sim.add_model("manager", args.manager)
manager = next(a for a, role in sim.state.roles.items() if role == "pm")
sim.use_model(manager, "manager")

report = sim.run(args.ticks)
sim.close()
print(f"{manager} (pm) on {sim.models['manager'].ref}; the rest on {sim.model.ref}")
print(f"tasks completed: {report.metrics['tasks_completed']}, released: {report.metrics.get('released')}")
print(json.dumps(report.models))
