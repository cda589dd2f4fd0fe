"""Several models in one simulation: `add_model`, `Persona(model=...)`, `use_model`; each model's turns batched
on it, all models of a tick deciding at once, the report, checkpoints and the TUI's header naming each."""

from __future__ import annotations

import threading

import pytest

from swarm.agents import Persona
from swarm.agents.actions import Say, Wait
from swarm.model import EngineModel, ScriptedModel
from swarm.runtime import Engine, EngineConfig
from swarm.scenario import ScenarioError
from swarm.simulation import Simulation
from swarm.tui.data import model_label


class Together(ScriptedModel):
    """A scripted model whose `decide` waits at a barrier: two of them return only if they decide at once."""

    def __init__(self, barrier: threading.Barrier, line: str, ref: str):
        super().__init__(lambda turn: Say(text=line) if turn.request.kind == "act" else Wait(), ref=ref)
        self.barrier, self.batches, self.turns = barrier, [], 0

    def decide(self, turns):
        self.batches.append(sorted({t.agent.id for t in turns}))
        self.turns += len(turns)
        self.barrier.wait(timeout=20)
        return super().decide(turns)


def town(model, **kwargs) -> Simulation:
    sim = Simulation(model, seed=3, **kwargs)
    sim.world.add_place("square")
    return sim


def test_each_models_turns_go_to_it_in_one_batch_and_the_models_decide_at_once():
    barrier = threading.Barrier(2)
    crowd, boss = Together(barrier, "as you say", "crowd"), Together(barrier, "to work!", "boss")
    sim = town(crowd)
    assert sim.add_model("manager", boss) is boss and list(sim.models) == ["default", "manager"]
    sim.add_agent(Persona(name="Ada", role="manager", model="manager"), at="square")
    for name in ("Bo", "Cy", "Di"):
        sim.add_agent(Persona(name=name, role="worker"), at="square")
    said = {e.actor: e.data["text"] for e in sim.tick() if e.kind == "say"}
    assert said == {"Ada": "to work!", "Bo": "as you say", "Cy": "as you say", "Di": "as you say"}
    assert crowd.batches == [["Bo", "Cy", "Di"]] and boss.batches == [["Ada"]]  # one call each, both at once
    sim.use_model("Bo", "manager")
    sim.tick()
    assert boss.batches[-1] == ["Ada", "Bo"] and sim.agents["Bo"].persona.model == "manager"
    report = sim.report()
    assert report.models == {"default": {"ref": "crowd", "turns": crowd.turns},
                             "manager": {"ref": "boss", "turns": boss.turns}}
    assert report.metrics["turns"] == crowd.turns + boss.turns
    sim.close()


def test_a_persona_naming_a_model_the_simulation_lacks_or_a_name_twice_says_so():
    sim = town(ScriptedModel(lambda t: Wait()))
    with pytest.raises(ValueError, match="names model 'boss'.*sim.add_model\\('boss'.*models: default"):
        sim.add_agent(Persona(name="Ada", model="boss"), at="square")
    sim.add_model("boss", ScriptedModel(lambda t: Wait()))
    for name in ("boss", "default"):
        with pytest.raises(ValueError, match=f"a model called '{name}' already exists"):
            sim.add_model(name, ScriptedModel(lambda t: Wait()))
    sim.add_agent(Persona(name="Bo"), at="square")
    with pytest.raises(ValueError, match="no model called 'chief'"):
        sim.use_model("Bo", "chief")
    sim.close()


def test_engines_count_their_tokens_apart_and_together(tmp_path):
    config = EngineConfig(kv_cache_tokens=1 << 14, kv_tier_memory=0)
    sim = Simulation.from_scenario("village", model=EngineModel(Engine.from_pretrained("swarm-tiny", config=config)),
                                   seed=2, agents=4)
    sim.add_model("second", Engine.from_pretrained("swarm-tiny", config=config))
    for agent in list(sim.agents)[:2]:
        sim.use_model(agent, "second")
    assert sim.agents[list(sim.agents)[0]].persona.adapter is not None  # the second engine serves its style too
    report = sim.run(3)
    sim.close()
    per = report.models
    assert per["default"]["turns"] > 0 and per["second"]["turns"] > 0
    for key in ("prompt_tokens", "generated_tokens", "prompt_tokens_computed"):
        assert per["default"][key] > 0 and per["second"][key] > 0
        assert per["default"][key] + per["second"][key] == report.metrics[key]
    assert per["default"]["turns"] + per["second"]["turns"] == report.metrics["turns"]


def test_checkpoints_keep_each_agents_model_and_reopen_the_models_by_reference(tmp_path):
    sim = Simulation.from_scenario("support_desk", model="scripted", seed=1, agents=6)
    sim.add_model("lead", "random")  # inside a scenario: its scripted policy or the random floor, by name
    lead = next(iter(sim.agents))
    sim.use_model(lead, "lead")
    sim.run(2)
    sim.save(tmp_path / "c.ckpt")
    assert Simulation.checkpoint_info(tmp_path / "c.ckpt")["models"] == {"lead": "random"}
    again = Simulation.load(tmp_path / "c.ckpt")
    assert again.agents[lead].persona.model == "lead" and again.models["lead"].ref == "random"
    again.run(1)
    assert again.report().models["lead"]["turns"] >= sim.report().models["lead"]["turns"]
    plain = Simulation.from_scenario("support_desk", model="scripted", seed=1, agents=6)
    with pytest.raises(ScenarioError, match="played by model\\(s\\) lead"):
        plain.restore(tmp_path / "c.ckpt")
    for s in (sim, again, plain):
        s.close()


def test_the_header_names_the_other_models():
    assert model_label("swarm-tiny", "cpu", {"manager": "openai:http://h/v1#qwen"}) == \
        "swarm-tiny on cpu, manager: openai:http://h/v1#qwen"
    assert model_label("swarm-tiny", None) == "swarm-tiny"
