"""Rope scaling variants and sliding windows: logit parity with `transformers`."""

import pytest
import torch

from swarm.runtime import Engine, ModelConfig
from tests.runtime.hf_models import VOCAB, build

pytest.importorskip("transformers", reason="transformers is the parity reference (dev extra)")

ROPES = {
    "linear": dict(rope_type="linear", factor=2.0),
    "dynamic": dict(rope_type="dynamic", factor=2.0),
    "llama3": dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
}


def _check(folder, ref, n: int):
    ids = torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    with torch.no_grad():
        theirs = ref(torch.tensor([ids])).logits[0]
    ours = Engine.from_pretrained(folder).logits(ids)
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4, f"max |logit diff| {err:.2e}"


@pytest.mark.parametrize("kind", sorted(ROPES))
def test_rope_scaling(tmp_path, kind):
    family = "qwen2" if kind == "yarn" else "llama"  # Qwen ships yarn, Llama 3 ships llama3
    ref = build(tmp_path, family, max_position_embeddings=32,
                rope_parameters={"rope_theta": 500.0, **ROPES[kind]})
    # dynamic only differs past max_position_embeddings: go there
    _check(tmp_path, ref, 60 if kind == "dynamic" else 30)


def test_mixtral_sliding_window(tmp_path):
    ref = build(tmp_path, "mixtral", sliding_window=8)
    _check(tmp_path, ref, 40)


def test_qwen_sliding_window_from_max_window_layers(tmp_path):
    ref = build(tmp_path, "qwen2", use_sliding_window=True, sliding_window=6, max_window_layers=1)
    assert ModelConfig.from_hf(ref.config.to_dict()).sliding_windows == (None, 6)
    _check(tmp_path, ref, 40)


def test_v4_rope_layout_reads_like_v5():
    base = dict(model_type="llama", vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=8, max_position_embeddings=64)
    v4 = ModelConfig.from_hf({**base, "rope_theta": 5e5,
                              "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}})
    v5 = ModelConfig.from_hf({**base, "rope_parameters": {"rope_theta": 5e5, "rope_type": "yarn", "factor": 4.0,
                                                          "original_max_position_embeddings": 16}})
    assert v4.rope == v5.rope and v4.rope.type == "yarn" and v4.rope.theta == 5e5
    assert v4.max_context == 64
