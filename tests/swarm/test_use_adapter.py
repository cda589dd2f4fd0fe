"""Using a tuned adapter in a run: `Simulation.use_adapter` and `swarm run --adapter [AGENTS=]FOLDER`, kept by a
checkpoint and registered again by `swarm resume`."""

import shutil
import textwrap

import msgspec
import pytest

from swarm.cli import main
from swarm.demonstrations import read_demos
from swarm.runtime import model_path
from swarm.simulation import Simulation

STOPS_AFTER_ONE = textwrap.dedent('''
    from swarm import Persona


    def build(sim):
        sim.wake_after = 1  # everyone acts every tick
        sim.world.add_place("square")
        sim.add_agent(Persona(name="Ann", role="baker"), at="square")
        sim.add_agent(Persona(name="Bob", role="smith"), at="square")

        @sim.every_tick
        def stop_once(sim, events):  # as a SIGINT would: the run stops after its first tick, checkpointed
            if sim.world.tick == 0 and not sim.state.get("stopped"):
                sim.state["stopped"] = True
                sim.stop()
''')


@pytest.fixture
def adapter(tmp_path):
    """One of swarm-tiny's own adapters, copied under a name of its own."""
    folder = tmp_path / "baker"
    shutil.copytree(model_path("swarm-tiny") / "adapters" / "plain", folder)
    return folder


def test_use_adapter_needs_an_adapter_the_agents_model_serves():
    sim = Simulation.from_scenario("village", model="swarm-tiny", agents=3, bus=None)
    agent = next(iter(sim.agents))
    sim.use_adapter(agent, "gossip")
    assert sim.agents[agent].persona.adapter == "gossip"
    sim.use_adapter(agent, None)
    assert sim.agents[agent].persona.adapter is None
    with pytest.raises(ValueError, match="serves no adapter 'nope'; it serves: .*gossip"):
        sim.use_adapter(agent, "nope")
    with pytest.raises(ValueError, match="unknown agent"):
        sim.use_adapter("Zed", "gossip")
    sim.close()


def test_the_adapter_flag_gives_agents_their_adapter_and_a_resumed_run_keeps_it(tmp_path, adapter, capsys):
    scenario, ckpt, demos = tmp_path / "square.py", tmp_path / "run.ckpt", tmp_path / "demos.jsonl"
    scenario.write_text(STOPS_AFTER_ONE)
    assert main(["run", str(scenario), "--ticks", "3", "--headless", "--adapter", f"Ann={adapter}",
                 "--checkpoint", str(ckpt), "--checkpoint-every", "1", "--record-demos", str(demos)]) == 0
    assert {(d.agent, d.adapter) for d in read_demos(demos)} == {("Ann", "baker"), ("Bob", None)}
    info = Simulation.checkpoint_info(ckpt)
    assert info["tick"] == 1 and info["run"]["adapters"] == [[["Ann"], str(adapter)]]
    capsys.readouterr()
    assert main(["resume", str(ckpt), "--headless", "--json"]) == 0  # Ann's adapter is registered again
    resumed = msgspec.json.decode(capsys.readouterr().out.splitlines()[-1])
    assert resumed["metrics"]["turns"] >= 4 and resumed["metrics"]["no_action"] == 0  # ticks 1 and 2, both agents
    assert Simulation.checkpoint_info(ckpt)["tick"] == 3
    loaded = Simulation.load(ckpt, model="swarm-tiny", bus=None)
    assert loaded.agents["Ann"].persona.adapter == "baker"
    loaded.close()


@pytest.mark.parametrize("args, message", [
    (["--adapter", "Zed={folder}"], "unknown agent 'Zed'"),
    (["--adapter", "{tiny}/adapters/gossip"], "an adapter called 'gossip' is already loaded (from the model folder)"),
    (["--adapter", "Ann=", ], "--adapter takes [AGENT,AGENT=]FOLDER"),
    (["--model", "scripted", "--adapter", "{folder}"], "--adapter needs a model swarm runs itself"),
])
def test_bad_adapter_flags_are_one_clear_line(tmp_path, adapter, capsys, args, message):
    args = [a.format(folder=adapter, tiny=model_path("swarm-tiny")) for a in args]
    assert main(["run", "village", "--agents", "3", "--ticks", "1", "--headless", *args]) == 2
    assert message in capsys.readouterr().err
