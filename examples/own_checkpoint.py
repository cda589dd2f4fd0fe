"""Run a bundled scenario on your own checkpoint folder.

    python examples/own_checkpoint.py /path/to/model-folder [scenario] [ticks]
    swarm run support_desk --model /path/to/model-folder --ticks 20      # the same from the shell

The folder is a Hugging Face checkpoint of a supported family (Qwen3-MoE, Qwen2-MoE, Mixtral,
OLMoE, Granite-MoE, Llama, Qwen2, Qwen3): config.json, safetensors (sharded or not),
tokenizer.json and a chat template in tokenizer_config.json. Nothing is downloaded. PEFT adapters
under <folder>/adapters/<name>/ are registered by name, so personas whose style matches use them.
"""

import sys

from swarm import Simulation

folder = sys.argv[1] if len(sys.argv) > 1 else "swarm-tiny"
scenario = sys.argv[2] if len(sys.argv) > 2 else "support_desk"
ticks = int(sys.argv[3]) if len(sys.argv) > 3 else 10

sim = Simulation.from_scenario(scenario, model=folder, seed=1)
report = sim.run(ticks)
sim.close()
print(f"{scenario} on {folder}: {report.ticks} ticks, {report.events} events")
for name, value in report.metrics.items():
    print(f"  {name}: {value}")
