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
    examples = [Example.turn([7, 8], [10 + (i + j) % 20 for j in range(30)]) for i in range(40)]
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
    assert summary["examples"]["focus_drills"] == 0  # the smoke recipe's village has no focus to drill
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


def _run_of_demos(turns: int):
    """One agent's consecutive turns as the simulation prompts them (system, up to 2 past exchanges, new
    observation), and a reflection."""
    from swarm.train.demos import Demo

    system = {"role": "system", "content": "You are Ada, a miller."}
    history, demos = [], []
    for t in range(turns):
        user = {"role": "user", "content": f"Tick {t}. The mill turns. Bram says: day {t * 7} of the harvest."}
        answer = f'{{"type":"say","text":"Flour for day {t * 7}."}}'
        demos.append(Demo(scenario="village", seed=0, tick=t, agent="Ada", style="plain", kind="act",
                          messages=[system, *history, user], completion=answer))
        history = [*history, user, {"role": "assistant", "content": answer}][-4:]
    demos.append(Demo(scenario="village", seed=0, tick=turns, agent="Ada", style="plain", kind="reflect",
                      messages=[system, {"role": "user", "content": "What have you learned?"}],
                      completion='{"text":"Harvest is busy."}'))
    return demos


def test_consecutive_turns_train_as_one_transcript_tokenized_as_served():
    from swarm.train.pipeline import _render, encode, encode_episodes, episodes

    demos = _run_of_demos(4)
    groups = episodes(demos, turns=3)
    assert sorted(len(g) for g in groups) == [1, 1, 3]  # 3 turns, the 4th alone, the reflection alone
    tok = train_tokenizer([_render(d.messages) + d.completion for d in demos], 400)
    end = tok.token_to_id("<|im_end|>")
    [first, *_] = [g for g in groups if len(g) == 3]
    [ex], _, dropped = encode_episodes([first], tok, max_len=4096)
    assert dropped == 0 and len(ex.answers) == 3
    # the pieces tokenize as the whole transcript does (what a later prompt with this history is served as)
    whole = [*first[2].messages, {"role": "assistant", "content": first[2].completion}]
    assert ex.ids == tok.encode(_render(whole)).ids[: len(ex.ids) - 1] + [end]
    assert [tok.decode(ex.ids[a:b - 1]) for a, b in ex.answers] == [d.completion for d in first]
    # with as many turns as the simulation keeps as history, the episode is the last turn's own prompt
    [single], _, _ = encode([first[2]], tok, max_len=4096)
    assert ex.ids == single.ids
    # a longer episode that would pass max_len: the turn that does not fit starts a new example with its
    # own whole prompt (2 exchanges of history, as served)
    [four] = [g for g in episodes(demos, turns=4) if len(g) == 4]
    [last], _, _ = encode([four[3]], tok, max_len=4096)
    split, _, dropped = encode_episodes([four], tok, max_len=len(last.ids))
    assert dropped == 0 and [len(e.answers) for e in split] == [3, 1] and split[1] == last
    assert encode_episodes([first], tok, max_len=5) == ([], [], 3)  # nothing fits


def test_focus_drills_cut_act_turns_to_their_focus_and_the_question():
    from swarm.train.demos import Demo
    from swarm.train.pipeline import focus_drills

    system = {"role": "system", "content": "You are Ava, triage agent."}
    user = {"role": "user", "content": "Tick 3. You are at the triage desk.\n\nNew observations:\n- New ticket "
                                       "T-0004\n\nYou remember:\n- (tick 1) an old ticket\n\nNow: Route T-0004 from "
                                       "Grace: \"Refund?\"\n\nAnswer with one action as JSON."}
    act = Demo(scenario="support_desk", seed=0, tick=3, agent="Ava", style="triage", kind="act",
               messages=[system, user], completion='{"type":"wait"}')
    unfocused = msgspec.structs.replace(act, messages=[system, {"role": "user", "content": "Tick 4.\n\nAnswer."}])
    reflect = msgspec.structs.replace(act, kind="reflect")
    elsewhere = msgspec.structs.replace(act, scenario="village")
    drills = focus_drills([act, unfocused, reflect, elsewhere], {"support_desk": 2})
    assert len(drills) == 2  # the focused act turn, twice; no focus, not an act turn, or another scenario: none
    assert drills[0].messages == [{"role": "user", "content": "Now: Route T-0004 from Grace: \"Refund?\"\n\n"
                                                              "Answer with one action as JSON."}]
    assert drills[0].completion == act.completion and drills[0].style == "triage"
    assert focus_drills([act], {}) == []


def test_an_explored_turn_ends_its_episode():
    from swarm.train.pipeline import episodes

    demos = _run_of_demos(4)
    demos[1] = msgspec.structs.replace(demos[1], played='{"type":"wait"}')  # the run played something else
    groups = episodes(demos, turns=3)
    # the next turn's history holds what was played, so the transcript cannot go on from the answer
    assert sorted(len(g) for g in groups) == [1, 2, 2] and [d.tick for d in groups[1]] == [demos[0].tick, demos[1].tick]
