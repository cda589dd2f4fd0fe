"""Demonstrations recorded from runs (`sim.record_demos`, `swarm run --record-demos`): chat fine-tuning lines
with the messages as the model got them and the answer as written, their metadata, and the filters."""

import json

import msgspec
import pytest

from swarm import Persona, ScriptedModel, Simulation
from swarm.agents.actions import Move, Say, Wait
from swarm.cli import main
from swarm.demonstrations import read_demos
from swarm.model import Answer


def policy(turn):
    """Mira walks to the moon (a failed action), Bob speaks, Ann waits; plans and reflections the defaults."""
    if turn.request.kind != "act":
        from swarm.baselines import random_policy

        return random_policy(turn)
    return {"Mira": Move(to="moon"), "Bob": Say(text="hello")}.get(turn.agent.id, Wait())


def tavern(model) -> Simulation:
    sim = Simulation(model, seed=3, bus=None)
    sim.world.add_place("tavern")
    sim.world.add_place("square")
    sim.world.connect("tavern", "square", minutes=1)
    sim.add_agent(Persona(name="Mira", role="innkeeper", style="warm"), at="tavern")
    sim.add_agent(Persona(name="Bob", role="smith", adapter=None), at="tavern")
    sim.add_agent(Persona(name="Ann", role="baker"), at="square")
    return sim


def test_every_answered_turn_is_a_chat_line_with_its_metadata(tmp_path):
    model = ScriptedModel(policy, ref="scripted")
    sim = tavern(model)
    path = tmp_path / "demos.jsonl"
    seen = []
    real = model.decide

    def decide(turns):  # what the model was given, to compare with what was written
        seen.extend((t.world.tick, t.agent.id, t.request.kind, [dict(m) for m in t.request.messages]) for t in turns)
        return real(turns)

    model.decide = decide
    sim.record_demos(path)
    sim.run(3)
    demos = read_demos(path)
    assert sim.demos.written == len(demos) == len(seen) > 3
    for d, (tick, agent, kind, messages) in zip(demos, seen, strict=True):
        assert (d.tick, d.agent, d.kind) == (tick, agent, kind)
        assert d.messages[:-1] == messages and messages[0]["role"] == "system"
        assert d.messages[-1]["role"] == "assistant"
        assert (d.sim, d.seed, d.scenario, d.model, d.source) == ("sim", 3, None, "default", "scripted")
        assert d.persona == agent and d.style == ("warm" if agent == "Mira" else None) and d.adapter is None
        assert d.schema.get("anyOf") or d.schema.get("type") == "object"
    acts = {d.agent: json.loads(d.messages[-1]["content"]) for d in demos if d.kind == "act" and d.tick == 0}
    assert acts == {"Mira": {"type": "move", "to": "moon"}, "Bob": {"type": "say", "text": "hello", "to": None},
                    "Ann": {"type": "wait"}}
    # each line is the plain chat layout: any fine-tuning tool reads "messages"
    first = json.loads(path.read_text().splitlines()[0])
    assert {m["role"] for m in first["messages"]} <= {"system", "user", "assistant"}


def test_filters_keep_successful_actions_some_agents_and_kinds(tmp_path):
    sim = tavern(ScriptedModel(policy))
    sim.record_demos(tmp_path / "ok.jsonl", successful_only=True)
    events = sim.tick()
    assert any(e.kind == "fail" and e.actor == "Mira" for e in events)
    ok = read_demos(tmp_path / "ok.jsonl")
    assert {d.agent for d in ok if d.kind == "act"} == {"Bob", "Ann"}

    sim = tavern(ScriptedModel(policy))
    sim.record_demos(tmp_path / "bob.jsonl", agents=["Bob"], kinds=["act"])
    sim.run(3)
    bob = read_demos(tmp_path / "bob.jsonl")
    assert bob and {(d.agent, d.kind) for d in bob} == {("Bob", "act")}

    for name, actions in (("all.jsonl", None), ("says.jsonl", ["say"])):  # the same run twice (same seed)
        sim = tavern(ScriptedModel(policy))
        sim.record_demos(tmp_path / name, actions=actions)
        sim.run(3)
    every, says = read_demos(tmp_path / "all.jsonl"), read_demos(tmp_path / "says.jsonl")
    kept = [d for d in every if d.kind != "act" or json.loads(d.messages[-1]["content"])["type"] == "say"]
    assert says == kept and any(d.kind == "act" for d in says) and len(says) < len(every)


def test_a_models_answer_is_its_text_as_written(tmp_path):
    class Writer(ScriptedModel):
        """Answers like a language model: a value and the exact text it wrote (spaces and all)."""

        def decide(self, turns):
            return [Answer(v, msgspec.json.encode(v).decode().replace(":", ": ")) for v in super().decide(turns)]

    sim = tavern(Writer(policy))
    sim.record_demos(tmp_path / "d.jsonl", kinds=["act"])
    sim.tick()
    said = {d.agent: d.messages[-1]["content"] for d in read_demos(tmp_path / "d.jsonl")}
    assert said["Ann"] == '{"type": "wait"}'


def test_bad_input_gets_clear_errors(tmp_path, capsys):
    sim = tavern(ScriptedModel(policy))
    path = tmp_path / "d.jsonl"
    path.write_text("earlier run\n")
    with pytest.raises(FileExistsError, match="not written over"):
        sim.record_demos(path)
    sim.record_demos(path, append=True)
    sim.tick()
    assert path.read_text().startswith("earlier run\n") and len(path.read_text().splitlines()) > 1
    with pytest.raises(ValueError, match="unknown turn kinds"):
        sim.record_demos(tmp_path / "e.jsonl", kinds=["dance"])
    assert main(["run", "village", "--model", "scripted", "--ticks", "1", "--headless", "--demo-agents", "Mira"]) == 2
    assert "and --demo-actions need --record-demos FILE" in capsys.readouterr().err


def test_swarm_run_records_demos(tmp_path, capsys):
    path = tmp_path / "village.jsonl"
    assert main(["run", "village", "--model", "scripted", "--ticks", "3", "--headless", "--record-demos", str(path),
                 "--demos-successful", "--demo-kinds", "act"]) == 0
    demos = read_demos(path)
    assert demos and all(d.kind == "act" and d.scenario == "village" and d.source == "scripted" for d in demos)
    assert f"{len(demos):,} demonstrations written to {path}" in capsys.readouterr().err
