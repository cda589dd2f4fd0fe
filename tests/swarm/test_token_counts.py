"""The report's token counts: prompt tokens sent, of those served from the prefix cache and computed,
and generated tokens, per tick in the history and in total; on a real engine (a tiny random model), on
the fake engine (which counts generated tokens only) and on a scripted model (which counts none)."""

import pytest

from swarm import ScriptedModel
from swarm.agents.actions import Wait
from swarm.model import EngineModel
from swarm.runtime import Engine
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.fake_engine import FakeEngine
from tests.swarm.test_simulation import tavern

TOKENS = ("prompt_tokens", "prompt_tokens_cached", "prompt_tokens_computed", "recomputed_tokens", "generated_tokens")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.from_pretrained(write_random_model(tmp_path_factory.mktemp("tiny"), tiny_config(vocab_size=384)))


def test_an_engine_run_counts_prompt_tokens_computed_and_cached_and_generated_tokens(engine):
    engine.generate(["work done before the simulation"])  # not this simulation's: left out of its counts
    before = engine.stats()
    sim = tavern(EngineModel(engine, temperature=0.0), seed=2, max_action_tokens=24)
    report = sim.run(4)
    sim.close()
    after, m = engine.stats(), report.metrics
    assert m["prompt_tokens"] == after["prompt_tokens"] - before["prompt_tokens"] > 0
    assert m["prompt_tokens_cached"] == after["cached_tokens"] - before["cached_tokens"] > 0  # personas' prefixes
    assert m["prompt_tokens_computed"] + m["prompt_tokens_cached"] == m["prompt_tokens"]
    assert m["generated_tokens"] == after["tokens_generated"] - before["tokens_generated"] > 0
    assert m["recomputed_tokens"] == after["recomputed_tokens"] - before["recomputed_tokens"]
    assert m["generated_tokens_per_s"] == after["tokens_per_s"] and "tokens_per_s" not in m
    assert m["computed_tokens_per_s"] == after["computed_tokens_per_s"]
    for row in report.history:
        assert row["prompt_tokens_computed"] + row["prompt_tokens_cached"] == row["prompt_tokens"]
    for name in TOKENS:  # each tick's counts add up to the run's
        assert sum(row[name] for row in report.history) == m[name]
    assert list(m)[list(m).index("prompt_tokens") :][: len(TOKENS)] == list(TOKENS)  # the report's order


def test_a_resumed_run_keeps_counting_from_its_checkpoint(engine, tmp_path):
    sim = tavern(EngineModel(engine, temperature=0.0), seed=2, max_action_tokens=24)
    sim.run(2)
    sim.save(tmp_path / "ckpt")
    sim.close()
    saved = sim.report().metrics["prompt_tokens"]
    resumed = tavern(EngineModel(engine, temperature=0.0), seed=2, max_action_tokens=24)
    resumed.restore(tmp_path / "ckpt")
    report = resumed.run(2)
    resumed.close()
    assert report.metrics["prompt_tokens"] > saved
    assert sum(row["prompt_tokens"] for row in report.history) == report.metrics["prompt_tokens"]


def test_models_that_count_less_leave_the_rest_out():
    fake = FakeEngine()
    sim = tavern(ScriptedModel(lambda t: Wait()))
    sim.model = EngineModel(fake, ref="fake", clock=fake.clock)  # put in place after the simulation was made
    report = sim.run(2)
    sim.close()
    assert report.metrics["generated_tokens"] == fake.generated > 0  # all of it this simulation's
    assert not {"prompt_tokens", "prompt_tokens_cached", "prompt_tokens_computed"} & set(report.metrics)
    assert {"generated_tokens"} == set(TOKENS) & set(report.history[0])
    scripted = tavern(ScriptedModel(lambda t: Wait()))
    report = scripted.run(2)
    scripted.close()
    assert not set(TOKENS) & (set(report.metrics) | set(report.history[0]))
