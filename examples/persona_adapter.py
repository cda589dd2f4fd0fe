"""Give a persona its own LoRA adapter.

    python examples/persona_adapter.py

An adapter is a PEFT LoRA folder (`adapter_config.json` + `adapter_model.safetensors`), trained
with `peft` or by `swarm train`. The engine serves any mix of adapters in one batch: each agent's
turns run with its own adapter, and its cached KV is kept apart from the other adapters'.
"""

from swarm import Persona, Simulation
from swarm.runtime import Engine, model_path

engine = Engine.from_pretrained("swarm-tiny")  # also registers the adapters shipped in swarm-tiny/adapters/
print("adapters shipped with swarm-tiny:", ", ".join(engine.adapters()))

# Your own adapter folder, under a name of your choice (here one of swarm-tiny's, to stay self-contained).
engine.add_adapter("town-crier", model_path("swarm-tiny") / "adapters" / "gossip")

sim = Simulation(model=engine, seed=3)
sim.world.preamble = "A small town by a river. People meet at the square and trade news."
sim.world.add_place("square", "the well, the notice board, geese")
sim.add_agent(Persona(name="Hugo", role="town crier", adapter="town-crier"), at="square")  # an adapter by name
sim.add_agent(Persona(name="Mira", role="innkeeper", style="gossip"), at="square")  # the adapter of its style
sim.add_agent(Persona(name="Bram", role="miller"), at="square")  # the base model
for agent in sim.agents.values():
    print(f"{agent.id}: adapter {agent.persona.adapter}")
for tick in range(3):
    if tick == 1:  # something to react to: the mayor asks around (as any outside client could, over the bus)
        for name in sim.agents:
            sim.inject(name, "Is the harvest fair still on tonight?", sender="the mayor")
    for event in sim.tick():
        print(f"[tick {event.tick}] {event.text}")
sim.close()
