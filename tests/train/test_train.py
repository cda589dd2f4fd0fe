"""Training: export and load are inverses, a trained LoRA serves as it trained, and the whole
`swarm train` pipeline runs end to end on a smoke recipe."""

import json
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
import torch

from swarm.runtime import Engine, EngineConfig
from swarm.runtime.config import ModelConfig
from swarm.runtime.kv import DenseBatch
from swarm.runtime.loader import load_model
from swarm.runtime.model import Model
from swarm.train.export import save_adapter, save_model
from swarm.train.lora import TARGETS, TrainableLoRA
from swarm.train.pipeline import SMOKE, Recipe, train_tokenizer
from swarm.train.trainer import Example, TrainConfig, evaluate, init_weights, train

ROOT = Path(__file__).resolve().parents[2]


def tiny(tie=True) -> tuple[Model, dict]:
    recipe = replace(SMOKE, vocab=300)
    config = {**recipe.model_config(), "tie_word_embeddings": tie}
    model = Model(ModelConfig.from_hf(config))
    init_weights(model, seed=1, std=0.2)
    return model.eval(), config


def tokenizer():
    return train_tokenizer(["the tavern is warm", '{"type":"say","text":"hello"}'] * 50, 300)


def forward(model, ids):
    with torch.no_grad():
        return model.compute_logits(model(torch.tensor(ids), torch.arange(len(ids)), DenseBatch([len(ids)], "cpu")))


@pytest.mark.parametrize("tie", [True, False])
def test_save_then_load_gives_the_same_model(tmp_path, tie):
    model, config = tiny(tie)
    save_model(model, config, tokenizer(), tmp_path, dtype=torch.float32)
    loaded = load_model(tmp_path)
    ours, theirs = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    engine = Engine.from_pretrained(tmp_path, config=EngineConfig(kv_cache_tokens=1024))
    ids = [5, 9, 33, 7, 120, 4]
    assert torch.allclose(engine.logits(ids), forward(model, ids), atol=1e-4)


def test_a_trained_adapter_serves_as_it_trained(tmp_path):
    model, config = tiny()
    save_model(model, config, tokenizer(), tmp_path / "base", dtype=torch.float32)
    lora = TrainableLoRA(model, rank=4, alpha=8.0, seed=3)
    with torch.no_grad():
        for b in lora.B.values():
            b.normal_(0, 0.3)  # as if trained: a zero B would make the test blind
    ids = [5, 9, 33, 7, 120, 4]
    with_lora = forward(model, ids)
    save_adapter(lora.peft_weights(), 4, 8.0, TARGETS, tmp_path / "adapter", base="base", dtype=torch.float32)
    lora.remove()
    assert not torch.allclose(forward(model, ids), with_lora, atol=1e-3)  # the adapter changes the output
    engine = Engine.from_pretrained(tmp_path / "base", config=EngineConfig(kv_cache_tokens=1024))
    engine.add_adapter("style", tmp_path / "adapter")
    assert torch.allclose(engine.logits(ids, adapter="style"), with_lora, atol=1e-4)


def test_training_lowers_the_loss_on_a_learnable_pattern():
    model, _ = tiny()
    model.train()
    examples = [Example([7, 8] + [10 + (i + j) % 20 for j in range(30)], 2) for i in range(40)]
    before = evaluate(model, examples)
    train(model, examples, TrainConfig(steps=40, batch_tokens=256, lr=1e-2, warmup=4, log_every=20))
    assert evaluate(model, examples) < 0.5 * before


def test_swarm_train_smoke_end_to_end(tmp_path):
    from swarm.cli import main

    assert main(["train", "--smoke", "--out", str(tmp_path), "--scenario", str(ROOT / "examples" /
                 "scenario_from_scratch.py")]) == 0
    folder = tmp_path / "model"
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["heldout_nll"] < summary["untrained_heldout_nll"]
    assert summary["examples"]["train"] > 0 and summary["examples"]["heldout"] > 0
    assert [json.loads(line)["phase"] for line in (folder / "training_log.jsonl").read_text().splitlines()][0] == "base"
    assert (folder / "README.md").is_file()  # the model card
    engine = Engine.from_pretrained(folder)
    assert engine.adapters()  # one adapter per persona style of the scenario
    from swarm.agents.actions import Say

    [out] = engine.generate(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], schema=Say)
    assert isinstance(out.value, Say) or out.finish_reason == "length"
    assert msgspec.json.decode((folder / "config.json").read_bytes())["torch_dtype"] == "float16"


def test_recipe_defaults_describe_a_small_moe():
    cfg = ModelConfig.from_hf(Recipe().model_config())
    assert cfg.num_experts == 8 and cfg.top_k == 2 and cfg.model_type == "qwen3_moe"
