"""The routing probe: held-out seeds, triage turns as served with their hidden truth, and scoring
each Route against the ticket it names."""

import msgspec
import pytest
import torch

from swarm.runtime import Engine, EngineConfig
from swarm.runtime.config import ModelConfig
from swarm.runtime.model import Model
from swarm.scenarios.support_desk import CATEGORIES
from swarm.scenarios.support_desk.probe import heldout_seeds, routing_probe, score, triage_cases
from swarm.train.demos import DemoPlan
from swarm.train.export import save_model
from swarm.train.pipeline import SMOKE, train_tokenizer
from swarm.train.trainer import init_weights


def test_heldout_seeds_are_the_ones_training_leaves_out():
    seeds = heldout_seeds(3, heldout_every=10)
    assert seeds == [9, 19, 29]
    assert all(DemoPlan(("support_desk",), heldout_every=10).split(s) == "heldout" for s in seeds)


def test_cases_carry_the_truth_and_the_scripted_answers_score_perfectly():
    cases = triage_cases(heldout_seeds(1), ticks=12, limit=8)
    assert len(cases) == 8
    for c in cases:
        assert c.turn.request.kind == "act" and c.gold.ticket in c.truth
        assert "route" in msgspec.json.encode(msgspec.json.schema(c.turn.request.schema)).decode()
    perfect = score(cases, [c.gold for c in cases])
    assert perfect["queue_accuracy"] == perfect["priority_accuracy"] == 1.0
    wrong = [msgspec.structs.replace(c.gold, queue=CATEGORIES[(CATEGORIES.index(c.gold.queue) + 1) % 4])
             for c in cases]
    off = score(cases, [*wrong[:-1], None])  # and one turn that did not route
    assert off["routed"] == 7 and off["queue_accuracy"] == 0.0
    assert sum(sum(row.values()) for row in off["confusion"].values()) == 7


def test_the_probe_runs_a_model_on_the_cases(tmp_path):
    cases = triage_cases(heldout_seeds(1), ticks=12, limit=3)
    texts = [m["content"] for c in cases for m in c.turn.request.messages] * 5
    config = {**SMOKE.model_config(), "vocab_size": 400}
    model = Model(ModelConfig.from_hf(config))
    init_weights(model, seed=0)
    save_model(model, config, train_tokenizer(texts, 400), tmp_path, dtype=torch.float32)
    result = routing_probe(Engine.from_pretrained(tmp_path, config=EngineConfig(kv_cache_tokens=8192)), cases,
                           temperature=0.0)
    assert result["cases"] == 3 and result["routed"] <= 3  # an untrained model may Wait, or run out of tokens
    assert 0.0 <= result["queue_choice_p_right"] <= 1.0 and 0.0 <= result["queue_accuracy"] <= 1.0


class _Bytes:
    def encode(self, text):
        return list(text.encode())


class _Reader:
    """Logits of a model that predicts from its context: after a byte seen before, what followed it then
    (`reads=False`: uniform, a model that ignores its context)."""

    def __init__(self, reads: bool):
        self.tokenizer, self.reads = _Bytes(), reads

    def logits(self, ids):
        out = torch.zeros(len(ids), 256)
        for i, t in enumerate(ids):
            seen = [j for j in range(i) if ids[j] == t]
            if self.reads and seen:
                out[i, ids[seen[-1] + 1]] = 30.0
        return out


def test_copy_probe_tells_a_model_that_reads_its_context_from_one_that_does_not():
    from swarm.scenarios.support_desk.probe import copy_probe

    texts = ["abcdefgh", "Refund please"[:8]]
    reader, blind = copy_probe(_Reader(True), texts), copy_probe(_Reader(False), texts)
    assert reader["copy_second_pass_p"] > 0.99 and reader["copy_first_pass_p"] < 0.2
    assert blind["copy_second_pass_p"] == pytest.approx(1 / 256) == blind["copy_first_pass_p"]
