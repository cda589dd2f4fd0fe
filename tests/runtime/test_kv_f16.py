"""An engine on a float16 KV cache under a float32 model on the CPU (`EngineConfig(kv_dtype="float16")`): twice
the tokens of float32 in the same bytes, the fused decode (whole steps included) equal to the modules bit for bit
(the C code rounds the new keys and values to halves as torch's conversion does), and greedy text equal to the
float32 cache's on a random model, with logits within float16 rounding of it."""

import pytest
import torch

from swarm.kernels.native import build
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.block_pool import KVPool
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.runtime.test_fused import _decode_logits, _prompts

needs_native = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = tiny_config("qwen3_moe", vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    return write_random_model(tmp_path_factory.mktemp("kv_f16"), cfg)


def test_float16_kv_holds_twice_the_tokens(folder):
    budget = 2**20
    f32 = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_bytes=budget))
    f16 = Engine.from_pretrained(folder, config=EngineConfig(kv_cache_bytes=budget, kv_dtype="float16"))
    assert f16.stats()["kv_dtype"] == "float16" and f16.pool.k[0].dtype == torch.float16
    cfg = f32.config
    assert KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, "float16") * 2 == \
        KVPool.bytes_per_token(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, "float32")
    assert f16.pool.num_blocks == pytest.approx(2 * f32.pool.num_blocks, rel=0.05)
    with pytest.raises(ValueError, match="float16 under a float32 model on the CPU"):
        Engine.from_pretrained(folder, config=EngineConfig(kv_dtype="bfloat16"))


@needs_native
@pytest.mark.parametrize("family,changes", [("qwen3_moe", {}), ("mixtral", {"sliding_window": 7}),
                                            ("qwen2_moe", {"shared_expert_intermediate_size": 96})])
def test_fused_decode_on_float16_equals_the_modules(tmp_path, monkeypatch, family, changes):
    cfg = tiny_config(family, vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    folder = write_random_model(tmp_path, {**cfg, **changes})
    plain = Engine.from_pretrained(folder, config=EngineConfig(fused_decode=False, kv_dtype="float16"))
    fused = Engine.from_pretrained(folder, config=EngineConfig(kv_dtype="float16"))
    tokens, logits, calls = _decode_logits(fused, monkeypatch)
    ref_tokens, ref_logits, ref_calls = _decode_logits(plain, monkeypatch)
    assert not any(ref_calls.values()) and any(calls.values())  # the fused blocks ran, on one side only
    assert tokens == ref_tokens and len(logits) == len(ref_logits) > 0
    for a, b in zip(logits, ref_logits, strict=True):
        assert torch.equal(a, b)


def test_float16_kv_decodes_what_float32_does(folder):
    greedy = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    f32 = Engine.from_pretrained(folder)
    f16 = Engine.from_pretrained(folder, config=EngineConfig(kv_dtype="float16"))
    assert [c.token_ids for c in f16.generate(_prompts(), greedy)] == \
        [c.token_ids for c in f32.generate(_prompts(), greedy)]
    ids = list(range(5, 60))
    err = (f16.logits(ids) - f32.logits(ids)).abs().max().item()
    assert 0 < err < 1e-2  # the keys and values rounded to halves: a measured, small difference
