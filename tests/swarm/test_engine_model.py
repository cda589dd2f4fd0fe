"""EngineModel's hooks for watching a run: each turn's model time (on the Answer and the agent's
`last_latency`) and its act turns' text while they are generated (`progress`), on a deterministic
fake engine and once on a real engine with a tiny random model."""

import math

import pytest

from swarm import ScriptedModel, Simulation
from swarm.agents import TurnRequest
from swarm.agents.actions import Say, Wait
from swarm.model import Answer, EngineModel, NoAction, Turn
from swarm.runtime import Engine
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.fake_engine import FakeEngine
from tests.swarm.test_simulation import tavern


def fake_sim(engine: FakeEngine) -> Simulation:
    return tavern(EngineModel(engine, ref="fake", clock=engine.clock), seed=1)


def steps_for(text: str, per_step: int) -> int:
    return math.ceil(len(text) / per_step)


def test_each_turn_carries_its_model_time_and_the_agent_keeps_the_last():
    engine = FakeEngine(chars_per_step=8, step_s=0.05)
    sim = fake_sim(engine)
    sim.tick()
    # every agent acts on the first tick (it just arrived); the batch's turns finish at different steps
    for agent in sim.agents.values():
        said = agent.history[-1]["content"]
        assert agent.last_latency == pytest.approx(steps_for(said, 8) * 0.05)
    latencies = {a.last_latency for a in sim.agents.values()}
    assert len(latencies) > 1  # "Mira" and "Bob" write lines of different lengths
    sim.close()


def test_decide_returns_answers_with_seconds_and_no_action_without_a_run():
    engine = FakeEngine(chars_per_step=5, step_s=0.1)
    model = EngineModel(engine, clock=engine.clock)

    def turn(agent, max_tokens=64):
        request = TurnRequest(agent, "act", [{"role": "user", "content": "hi"}], Say, max_tokens, persona=agent)
        return Turn(request, None, None, seed=1)

    [a, b] = model.decide([turn("Al"), turn("Bea")])
    assert isinstance(a, Answer) and a.seconds == pytest.approx(steps_for(a.text, 5) * 0.1)
    assert isinstance(b, Answer) and b.seconds == pytest.approx(steps_for(b.text, 5) * 0.1)
    broken = EngineModel(_Refusing(engine), clock=engine.clock).decide([turn("Al")])  # it never ran
    assert isinstance(broken[0], NoAction) and broken[0].seconds is None


class _Refusing:
    """An engine whose submit always refuses the prompt (as a real one does past the context)."""

    def __init__(self, engine):
        self._engine = engine
        self.tokenizer, self.max_context = engine.tokenizer, 1 << 20

    def submit(self, *args, **kwargs):
        from swarm.runtime import SwarmError

        raise SwarmError("the prompt does not fit")

    def step(self):
        raise AssertionError("nothing to step")


def test_scripted_models_have_no_latency():
    sim = tavern(ScriptedModel(lambda t: Wait()))
    sim.tick()
    assert all(a.last_latency is None for a in sim.agents.values())
    sim.close()


def test_progress_reports_growing_prefixes_of_act_turns_for_the_agents_asked():
    engine = FakeEngine(chars_per_step=6)
    sim = fake_sim(engine)
    seen = []
    sim.model.progress = lambda agent, text, done: seen.append((agent, text, done))
    sim.model.streams = lambda agent: agent == "Bob"
    sim.tick()
    final = sim.agents["Bob"].history[-1]["content"]
    assert {a for a, _, _ in seen} == {"Bob"}
    # one call per step: each a longer prefix of the answer, the last one the whole answer, done
    steps = steps_for(final, 6)
    assert seen == [("Bob", final[: 6 * k], False) for k in range(1, steps)] + [("Bob", final, True)]
    sim.model.streams = None  # every agent
    seen.clear()
    sim.tick()
    assert {a for a, _, done in seen if done} == {"Mira", "Bob"}  # who acted: Ann, alone in the square, heard nothing
    sim.close()


def test_progress_and_latency_on_a_real_engine(tmp_path):
    engine = Engine.from_pretrained(write_random_model(tmp_path, tiny_config(vocab_size=384)))
    model = EngineModel(engine)
    seen = []
    model.progress = lambda agent, text, done: seen.append((agent, text, done))
    request = TurnRequest("Al", "act", [{"role": "user", "content": "Say something."}], Say, 24, persona="Al")
    [value] = model.decide([Turn(request, None, None, seed=3)])
    assert value.seconds is not None and value.seconds > 0
    assert len(seen) >= 2 and all(agent == "Al" for agent, _, _ in seen)
    assert [done for _, _, done in seen] == [False] * (len(seen) - 1) + [True]
    texts = [t.rstrip("\ufffd") for _, t, _ in seen]  # a character split over tokens decodes as U+FFFD
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
