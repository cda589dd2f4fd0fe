"""The shipped model: `transformers` loads the folder and agrees with the engine, its adapters load,
it is small enough to ship, and a simulation runs on it by name."""

import pytest
import torch

from swarm.runtime import DEFAULT_MODEL, Engine, bundled_models, model_path

pytestmark = pytest.mark.skipif(DEFAULT_MODEL not in bundled_models(),
                                reason="swarm-tiny is not in this checkout (train it: swarm train, see README)")


def test_transformers_loads_swarm_tiny_and_agrees_with_the_engine():
    transformers = pytest.importorskip("transformers", reason="transformers is the parity reference (dev extra)")
    folder = model_path(DEFAULT_MODEL)
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    engine = Engine.from_pretrained(DEFAULT_MODEL)
    prompt = engine.tokenizer.apply_chat_template([{"role": "system", "content": "You are Mira, innkeeper."},
                                                   {"role": "user", "content": "Bram says: hello"}])
    ids = engine.tokenizer.encode(prompt)
    with torch.no_grad():
        theirs = ref(torch.tensor([ids])).logits[0].float()
    ours = engine.logits(ids)
    assert (ours - theirs).abs().max().item() <= 1e-3
    assert theirs.std() > 0.5  # a trained model, not a constant


def test_size_adapters_and_card():
    folder = model_path(DEFAULT_MODEL)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 40 * 2**20, f"swarm-tiny is {size / 2**20:.1f} MiB (the budget is 40)"
    engine = Engine.from_pretrained(DEFAULT_MODEL)
    assert len(engine.adapters()) >= 2
    card = (folder / "README.md").read_text()
    assert "Held-out answer loss" in card and "What it can and cannot do" in card
