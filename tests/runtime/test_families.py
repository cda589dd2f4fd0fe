"""Mistral, Phi-3, Gemma 2 and Gemma 3 beyond logit parity (tests/runtime/test_parity.py): how their configs are
read, what is refused by name, the norm offset Gemma stores, and the soft-capped attention every path runs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from swarm.kernels import attention
from swarm.runtime import ConfigError, Engine, EngineConfig, ModelConfig, SamplingParams
from swarm.runtime.loader import load_model
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.train.export import hf_tensors

GEMMA3 = dict(model_type="gemma3_text", vocab_size=32, hidden_size=16, num_hidden_layers=6, num_attention_heads=2,
              num_key_value_heads=1, head_dim=8, intermediate_size=32, max_position_embeddings=64, sliding_window=4)


@pytest.mark.parametrize("family, what", [("gpt_oss", "attention sinks"), ("deepseek_v2", "latent attention"),
                                          ("deepseek_v3", "latent attention"), ("gemma3", "with vision")])
def test_families_not_yet_supported_are_refused_by_name(tmp_path, family, what):
    folder = write_random_model(tmp_path, tiny_config("llama", vocab_size=384))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": family}))
    with pytest.raises(ConfigError) as e:
        Engine.from_pretrained(folder)
    message = str(e.value)
    assert f"model_type {family!r}" in message and "is not yet supported" in message and what in message
    assert "gemma3_text" in message  # and what is supported


def test_other_unknown_families_keep_the_unsupported_error():
    with pytest.raises(ConfigError, match=r"unsupported model_type 'gpt_neox'; supported families: .*mistral"):
        ModelConfig.from_hf({**tiny_config("llama"), "model_type": "gpt_neox"})


@pytest.mark.parametrize("rope", [{"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
                                  {"type": "su"}, {"type": "yarn", "factor": 4.0}])
def test_phi3_longrope_is_refused_by_name(rope):
    with pytest.raises(ConfigError, match=r"rope scaling '(longrope|su|yarn)' \(longrope: the long-context Phi-3"):
        ModelConfig.from_hf({**tiny_config("phi3"), "rope_scaling": rope})


def test_partial_rotary_is_read_for_phi3_and_refused_where_transformers_turns_whole_heads():
    phi3 = ModelConfig.from_hf({**tiny_config("phi3"), "rope_parameters": {"rope_theta": 1e4,
                                                                           "partial_rotary_factor": 0.75}})
    assert phi3.head_dim == 16 and phi3.rotary_dim == 12
    with pytest.raises(ConfigError, match="partial_rotary_factor other than 1.0 is not supported for 'llama'"):
        ModelConfig.from_hf({**tiny_config("llama"), "partial_rotary_factor": 0.5})
    with pytest.raises(ConfigError, match="even number of rotary dimensions"):
        ModelConfig.from_hf({**tiny_config("phi3"), "partial_rotary_factor": 0.1})


def test_gemma2_defaults_follow_transformers():
    cfg = ModelConfig.from_hf({**GEMMA3, "model_type": "gemma2"})
    assert (cfg.attn_softcap, cfg.final_softcap, cfg.scale) == (50.0, 30.0, 256**-0.5)
    assert cfg.tie_word_embeddings and cfg.hidden_act == "gelu_pytorch_tanh" and cfg.norm_weight_offset == 1
    assert cfg.embedding_multiplier == 16**0.5 and cfg.qk_norm == "none"
    assert cfg.sliding_windows == (4, None) * 3  # every other layer slides, the first one included


def test_gemma3_v4_rope_layout_reads_like_v5():
    v4 = ModelConfig.from_hf({**GEMMA3, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
                              "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    v5 = ModelConfig.from_hf({**GEMMA3, "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}})
    assert v4 == v5
    assert v4.rope.type == "linear" and v4.rope.theta == 1e6 and v4.local_rope.theta == 1e4
    assert v4.sliding_windows == (4, 4, 4, 4, 4, None)  # five local layers, then a global one
    assert [v4.layer_rope(i) is v4.local_rope for i in range(6)] == [True] * 5 + [False]
    assert v4.final_softcap is None and v4.attn_softcap is None and v4.qk_norm == "head"


@pytest.mark.parametrize("change, message", [
    ({"attn_logit_softcapping": 50.0}, "no attention soft-capping"),
    ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ({"sliding_window": None}, "sliding-window layers but no sliding_window"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": "2"}}},
     r"field rope_parameters\.full_attention\.factor is \"2\""),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "dynamic", "factor": 2.0}}},
     "dynamic rope scaling is supported for the global layers' rope only"),
])
def test_gemma3_configs_the_engine_would_misread_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf({**GEMMA3, **change})


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    cfg = {**tiny_config("gemma2", vocab_size=384, hidden_size=64, num_layers=2),
           "attn_logit_softcapping": 2.0, "final_logit_softcapping": 4.0}
    return write_random_model(tmp_path_factory.mktemp("gemma2"), cfg)


def test_gemma_norms_load_with_their_offset_and_save_without_it(gemma2):
    stored = load_file(gemma2 / "model.safetensors")
    model = load_model(gemma2)
    assert torch.equal(model.layers[0].attn_out_norm.weight,
                       stored["model.layers.0.post_attention_layernorm.weight"] + 1)
    assert torch.equal(model.norm.weight, stored["model.norm.weight"] + 1)
    saved = hf_tensors(model, torch.float32)
    assert saved.keys() == stored.keys()
    assert all((saved[k] - stored[k]).abs().max() <= 1e-6 for k in stored)


def test_soft_capped_attention_runs_on_an_int8_kv_cache(gemma2):
    ids = list(range(5, 45))
    f32 = Engine.from_pretrained(gemma2)
    i8 = Engine.from_pretrained(gemma2, config=EngineConfig(kv_dtype="int8"))
    assert (i8.logits(ids) - f32.logits(ids)).abs().max() <= 0.05
    [a], [b] = (e.generate([ids], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)) for e in (f32, i8))
    assert len(a.token_ids) == len(b.token_ids) == 8


def test_embeddings_of_a_soft_capped_model_match_the_paged_pass(gemma2):
    engine = Engine.from_pretrained(gemma2)
    captured = []
    hook = engine.model.norm.register_forward_hook(lambda module, args, out: captured.append(out))
    ids = engine.tokenizer.encode("The baker sells bread at the market, and the guard waits by the well.")
    try:
        engine.logits(ids)
    finally:
        hook.remove()
    want = torch.nn.functional.normalize(captured[0].mean(0), dim=-1)
    assert (engine.embed([engine.tokenizer.decode(ids)])[0] - want).abs().max() <= 1e-5


def test_soft_capping_reference_kernels_agree():
    gen = torch.Generator().manual_seed(0)
    Q, S, H, G, d, bs = 5, 13, 4, 2, 8, 4
    q, k, v = (torch.randn(n, h, d, generator=gen) * 3 for n, h in ((Q, H), (S, G), (S, G)))
    # a cap far above every score changes nothing
    for window in (None, 4):
        assert torch.allclose(attention.causal_attention(q, k, v, 0.3, window, softcap=1e6),
                              attention.causal_attention(q, k, v, 0.3, window), atol=1e-5)
    capped = attention.causal_attention(q, k, v, 0.3, 4, softcap=1.5)
    assert not torch.allclose(capped, attention.causal_attention(q, k, v, 0.3, 4), atol=1e-3)
    # the paged prefill and decode kernels give the same as the plain one
    blocks = torch.tensor([3, 0, 2, 1])
    kc, vc = torch.zeros(4, bs, G, d), torch.zeros(4, bs, G, d)
    for p in range(S):
        kc[blocks[p // bs], p % bs], vc[blocks[p // bs], p % bs] = k[p], v[p]
    assert torch.allclose(attention.prefill_attention(q, kc, vc, blocks, S, 0.3, 4, softcap=1.5), capped, atol=1e-6)
    mask = (torch.arange(4 * bs) < S) & (torch.arange(4 * bs) > S - 1 - 4)
    one = attention.decode_attention(q[-1:], kc, vc, blocks[None], mask[None], 0.3, softcap=1.5)
    assert torch.allclose(one[0], capped[-1], atol=1e-6)
