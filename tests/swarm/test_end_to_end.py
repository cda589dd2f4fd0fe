"""The loop on a real (tiny, random-weight) model: every turn is a valid action decoded under the
grammar, all turns of a tick share the engine's batch, personas hit the prefix cache on later turns."""

import msgspec
import pytest

from swarm import EngineModel, Persona, Simulation
from swarm.agents.actions import Action, Insight, PlanUpdate
from swarm.model import Answer, NoAction
from swarm.runtime import Engine, EngineConfig
from swarm.runtime.random_model import tiny_config, write_random_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384))
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=32768, max_batched_tokens=1024))


class Watching(EngineModel):
    """The engine model, keeping every value it returned and the batch sizes it saw."""

    def __init__(self, engine, **kw):
        super().__init__(engine, **kw)
        self.values, self.batches = [], []

    def decide(self, turns):
        self.batches.append(len(turns))
        out = super().decide(turns)
        self.values += out
        return out


def test_a_few_ticks_on_a_random_model(engine):
    model = Watching(engine, temperature=1.0)
    sim = Simulation(model, seed=3, max_action_tokens=600)
    for p in ("tavern", "square"):
        sim.world.add_place(p)
    sim.world.connect("tavern", "square", minutes=1)
    for name, place in (("Mira", "tavern"), ("Bob", "tavern"), ("Ann", "square")):
        sim.add_agent(Persona(name=name, role="villager", goals=("chat",)), at=place)
    cached_before = engine.stats()["prefix_cache_hit_rate"]
    events = [e for _ in range(3) for e in sim.tick()]
    assert model.batches[0] == 3  # all three agents in one call
    # A random model writes long strings of odd characters; where a turn would run out of tokens before
    # its JSON closes, the engine closes it in time: every turn is an answer, a valid value of the schema.
    for v in model.values:
        assert isinstance(v, Answer), v
        assert isinstance(v.value, (Action, Insight, PlanUpdate)), v
        assert msgspec.json.decode(v.text, type=type(v.value)) == v.value
    assert any(e.kind not in ("join", "plan") for e in events)
    assert engine.stats()["prefix_cache_hit_rate"] > cached_before  # persona prompts came from the cache
    report = sim.report()
    assert report.metrics["turns"] == sum(model.batches) and "prefix_cache_hit_rate" in report.metrics


def test_an_answer_closed_by_the_budget_is_an_answer(engine):
    model = Watching(engine, temperature=1.0)
    sim = Simulation(model, seed=5, max_action_tokens=40)  # room for short actions, not for rambling
    sim.world.add_place("hall")
    for name in ("Ann", "Bo", "Cy", "Di"):
        sim.add_agent(Persona(name=name), at="hall")
    closed_before = engine.stats().get("budget_closed", 0)
    sim.tick()
    assert all(isinstance(v, Answer) for v in model.values) and sim.counters["no_action"] == 0
    assert engine.stats()["budget_closed"] > closed_before  # at least one of them was closed by the budget
    assert sim.report().metrics["budget_closed"] == engine.stats()["budget_closed"]  # the report counts them


def test_a_turn_whose_schema_does_not_fit_its_tokens_is_a_fail_event_not_a_crash(engine):
    sim = Simulation(EngineModel(engine), seed=0, max_action_tokens=2)
    sim.world.add_place("hall")
    sim.add_agent(Persona(name="Solo"), at="hall")
    [fail] = [e for e in sim.tick() if e.kind == "fail"]
    assert fail.actor == "Solo" and "does not fit max_tokens=2" in fail.text
    assert sim.counters["no_action"] == 1
    sim.tick()  # the agent saw why, and tries again
    assert sim.counters["turns"] == 2


def test_a_history_longer_than_the_context_is_cut_to_fit(engine):
    model = Watching(engine)
    sim = Simulation(model, seed=0, max_action_tokens=64, history_turns=50)
    sim.world.add_place("hall")
    agent = sim.add_agent(Persona(name="Solo"), at="hall")
    long = "the same long story again " * 40  # ~1000 characters per message
    agent.history = [m for _ in range(12) for m in ({"role": "user", "content": long},
                                                    {"role": "assistant", "content": '{"type":"wait"}'})]
    sim.tick()
    [value] = model.values
    assert not (isinstance(value, NoAction) and "context" in value.reason), value
    turn_messages = agent.history[-2]["content"]  # the newest turn made it into the prompt
    assert "You are at the hall" in turn_messages
