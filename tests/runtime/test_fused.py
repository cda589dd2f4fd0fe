"""Fused decode blocks (runtime/fused.py): decode steps give the modules' logits bit for bit, and a block that
cannot be fused (a shared expert, a dense MLP, clipping, a LoRA wrapper) runs its modules."""

import pytest
import torch

from swarm.kernels.native import build
from swarm.kernels.native import ops as native
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model

pytestmark = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
FAMILIES = {  # family -> (config changes, fused blocks per layer: attention, MoE)
    "qwen3_moe": ({}, (True, True)),  # per-head q/k norm
    "olmoe": ({}, (True, True)),  # q/k norm over the whole projection
    "mixtral": ({"sliding_window": 7}, (True, True)),  # a window shorter than the prompts
    "granitemoe": ({"residual_multiplier": 0.3, "embedding_multiplier": 2.0, "attention_multiplier": 0.2,
                    "logits_scaling": 1.5}, (True, True)),  # top-k on the logits, scalar multipliers
    "qwen2_moe": ({"shared_expert_intermediate_size": 96}, (True, False)),  # qkv bias; a shared expert
    "qwen2": ({}, (True, False)),  # dense MLP
    "mistral": ({"sliding_window": 7}, (True, False)),  # every layer windowed
    "olmoe_clip": ({"clip_qkv": 0.5}, (False, True)),
}


def _folder(tmp_path_factory, name):
    family = name.removesuffix("_clip")
    changes, _ = FAMILIES[name]
    cfg = tiny_config(family, vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    return write_random_model(tmp_path_factory.mktemp(name), {**cfg, **changes})


def _prompts(n=5):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(5, 384, (8 + 5 * i,), generator=g).tolist() for i in range(n)]


def _decode_logits(engine, monkeypatch, prompts=None):
    """Greedy tokens and every decode step's logits, with how many fused blocks ran (one at a time, or a whole
    step's at once)."""
    seen, calls = [], {"attention": 0, "moe": 0, "whole": 0}
    real_post, real_attn, real_moe, real_whole = Engine._postprocess, native.attention_block, native.moe_block, \
        native.decode

    def post(self, batch, logits):
        if all(s.num_tokens == 1 for s in batch):
            seen.append(logits.clone())
        return real_post(self, batch, logits)

    def attn(*a, **k):
        calls["attention"] += 1
        return real_attn(*a, **k)

    def moe(*a, **k):
        calls["moe"] += 1
        return real_moe(*a, **k)

    def whole(*a, **k):
        calls["whole"] += 1
        return real_whole(*a, **k)

    monkeypatch.setattr(Engine, "_postprocess", post)
    monkeypatch.setattr(native, "attention_block", attn)
    monkeypatch.setattr(native, "moe_block", moe)
    monkeypatch.setattr(native, "decode", whole)
    out = engine.generate(prompts or _prompts(), GREEDY)
    monkeypatch.undo()
    return [c.token_ids for c in out], seen, calls


@pytest.mark.parametrize("name", FAMILIES)
def test_fused_decode_equals_the_modules(tmp_path_factory, monkeypatch, name):
    folder = _folder(tmp_path_factory, name)
    plain = Engine.from_pretrained(folder, config=EngineConfig(fused_decode=False))
    fused = Engine.from_pretrained(folder)
    assert plain.fused is None and fused.fused is not None
    tokens, logits, calls = _decode_logits(fused, monkeypatch)
    ref_tokens, ref_logits, ref_calls = _decode_logits(plain, monkeypatch)
    assert ref_calls == {"attention": 0, "moe": 0, "whole": 0}
    assert tokens == ref_tokens
    assert len(logits) == len(ref_logits) > 0
    for a, b in zip(logits, ref_logits, strict=True):
        assert torch.equal(a, b)
    attention, moe = FAMILIES[name][1]
    steps, layers = len(logits), fused.config.num_layers
    if attention and moe:  # every block fused: a step runs from its tokens to its logits in one call
        assert calls == {"attention": 0, "moe": 0, "whole": steps}
    else:
        assert calls == {"attention": steps * layers * attention, "moe": steps * layers * moe, "whole": 0}


def _fused_against_plain(folder, monkeypatch, prompts=None, exact=True) -> tuple[dict, int]:
    """Decode with and without the fused blocks: equal tokens and logits, bit for bit (`exact`; else to float32
    rounding). Returns the fused engine's block calls and its decode steps."""
    fused = Engine.from_pretrained(folder)
    tokens, logits, calls = _decode_logits(fused, monkeypatch, prompts)
    ref_tokens, ref_logits, _ = _decode_logits(Engine.from_pretrained(folder, config=EngineConfig(
        fused_decode=False)), monkeypatch, prompts)
    assert tokens == ref_tokens and len(logits) == len(ref_logits) > 0
    for a, b in zip(logits, ref_logits, strict=True):
        assert torch.equal(a, b) if exact else torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    return calls, len(logits)


@pytest.mark.parametrize("changes", [{"tie_word_embeddings": True}, {"embedding_multiplier": 2.0}])
def test_a_whole_step_reads_the_embedding_as_the_modules_do(tmp_path, monkeypatch, changes):
    """A head tied to the embedding, and a scaled embedding (Granite's multiplier on a Qwen3-MoE)."""
    cfg = tiny_config("qwen3_moe", vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    calls, steps = _fused_against_plain(write_random_model(tmp_path, {**cfg, **changes}), monkeypatch)
    assert calls == {"attention": 0, "moe": 0, "whole": steps}


def test_a_step_of_more_sequences_than_the_c_head_takes_gets_torchs_head(tmp_path_factory, monkeypatch):
    """Past LINEAR_MAX_ROWS rows the head's product is torch's (as a prefill's is): the whole step returns the
    normed hidden states and the model's head computes the logits. (The modules' projections take torch's
    products at that many rows too, and the blocks keep the C code's: equal up to the order of the sums.)"""
    rows = native.LINEAR_MAX_ROWS + 3
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(5, 384, (4 + i % 7,), generator=g).tolist() for i in range(rows)]
    calls, steps = _fused_against_plain(_folder(tmp_path_factory, "qwen3_moe"), monkeypatch, prompts, exact=False)
    assert calls == {"attention": 0, "moe": 0, "whole": steps}


def test_dynamic_rope_past_the_trained_length_runs_the_blocks(tmp_path, monkeypatch):
    """Dynamic scaling computes other frequencies past max_position_embeddings, which the one rope table of a
    whole step does not hold: those steps run block by block (still fused), with the same logits."""
    cfg = tiny_config("qwen3_moe", vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4,
                      max_position_embeddings=24)
    cfg["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    calls, steps = _fused_against_plain(write_random_model(tmp_path, cfg), monkeypatch, _prompts(4))
    assert 0 < calls["whole"] < steps and calls["attention"] > 0


def test_pump_runs_the_fused_blocks_a_layer_at_a_time_with_the_same_tokens(tmp_path_factory, monkeypatch):
    """`step` runs a decode step's layers in one call; `pump` keeps stopping between layers (a frame budget)
    and computes the same tokens."""
    folder = _folder(tmp_path_factory, "mixtral")
    whole = Engine.from_pretrained(folder)
    assert whole.fused.whole is not None
    expected = [c.token_ids for c in whole.generate(_prompts(), GREEDY)]
    sliced = Engine.from_pretrained(folder)
    calls = []
    real = native.attention_block
    monkeypatch.setattr(native, "attention_block", lambda *a: calls.append(1) or real(*a))
    handles = [sliced.submit(p, GREEDY) for p in _prompts()]
    while not all(h.done for h in handles):
        sliced.pump(0.01)
    assert [h.result().token_ids for h in handles] == expected and calls


@pytest.mark.parametrize("family, changes", [
    ("gemma2", {}),  # norms on each block's output, soft-capped attention
    ("gemma3_text", {}),  # the same norms, and two rope tables
    ("phi3", {"partial_rotary_factor": 0.5}),  # rope over part of each head
])
def test_blocks_the_c_code_does_not_compute_are_never_fused(tmp_path_factory, monkeypatch, family, changes):
    cfg = tiny_config(family, vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2)
    engine = Engine.from_pretrained(write_random_model(tmp_path_factory.mktemp(family), {**cfg, **changes}))
    assert engine.fused is None  # decided at load: no layer has a block the native code reproduces
    tokens, logits, calls = _decode_logits(engine, monkeypatch)
    assert calls == {"attention": 0, "moe": 0, "whole": 0} and len(logits) > 0
    plain = Engine.from_pretrained(engine.source, config=EngineConfig(fused_decode=False))
    assert tokens == _decode_logits(plain, monkeypatch)[0]


def test_expert_load_is_counted_when_fused(tmp_path_factory):
    folder = _folder(tmp_path_factory, "qwen3_moe")
    loads = []
    for flag in (False, True):
        engine = Engine.from_pretrained(folder, config=EngineConfig(fused_decode=flag))
        engine.generate(_prompts(), GREEDY)
        loads.append(engine.stats()["expert_load"])
    assert loads[0] == loads[1]


def test_a_wrapped_projection_runs_its_modules(tmp_path_factory, monkeypatch):
    """A LoRA wrapper on layer 0's qkv (no adapter in it: it adds zero) sends that attention block to the
    modules; the other blocks stay fused and the logits stay the modules'."""
    folder = _folder(tmp_path_factory, "qwen3_moe")
    plain = Engine.from_pretrained(folder, config=EngineConfig(fused_decode=False))
    fused = Engine.from_pretrained(folder)
    fused.lora._wrap(0, "attn.qkv")
    tokens, logits, calls = _decode_logits(fused, monkeypatch)
    ref_tokens, ref_logits, _ = _decode_logits(plain, monkeypatch)
    assert tokens == ref_tokens and all(torch.equal(a, b) for a, b in zip(logits, ref_logits, strict=True))
    layers = fused.config.num_layers
    assert calls == {"attention": len(logits) * (layers - 1), "moe": len(logits) * layers, "whole": 0}


def test_torch_kernels_run_no_fused_block(tmp_path_factory, monkeypatch):
    folder = _folder(tmp_path_factory, "qwen3_moe")
    monkeypatch.setenv("SWARM_KERNELS", "torch")
    assert Engine.from_pretrained(folder).fused is None


def test_bad_shapes_are_refused():
    x, cache, ones = torch.zeros(2, 8), torch.zeros(4, 4, 1, 4), torch.ones(8)
    with pytest.raises(ValueError, match="attention_layer"):  # qkv must be [(H + 2G) d, D] = [16, 8]
        native.attention_layer(ones, 1e-6, torch.zeros(10, 8), None, 2, "none", None, None, 0.0, cache, cache, 0.5,
                               torch.zeros(8, 8), None, 1.0)
    with pytest.raises(ValueError, match="moe_layer"):  # a router for 3 experts, 4 in gate_up
        native.moe_layer(ones, 1e-6, torch.zeros(3, 8), 2, "softmax_topk", True, torch.zeros(4, 6, 8),
                         torch.zeros(4, 8, 3), 1.0)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.moe_layer(ones, 1e-6, torch.zeros(4, 8, dtype=torch.float64), 2, "softmax_topk", True,
                         torch.zeros(4, 6, 8), torch.zeros(4, 8, 3), 1.0)
    with pytest.raises(ValueError, match="decode_step"):  # slots for 3 sequences, x for 2
        native.decode_step(x, torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, dtype=torch.int64),
                           torch.zeros(2, 1, dtype=torch.int64))
    layer = native.attention_layer(ones, 1e-6, torch.zeros(16, 8), None, 2, "none", None, None, 0.0, cache, cache,
                                   0.5, torch.zeros(8, 8), None, 1.0)
    with pytest.raises(ValueError, match="attention_block"):  # a step without slots and tables (an MoE block's)
        native.attention_block(layer, native.decode_step(x), torch.ones(2, 4, dtype=torch.bool))


def test_a_whole_step_refuses_tokens_outside_its_tables(tmp_path_factory):
    engine = Engine.from_pretrained(_folder(tmp_path_factory, "qwen3_moe"))
    whole, (cos, sin) = engine.fused.whole, engine.model.rotary.table(64)
    with pytest.raises(ValueError, match="outside the embedding"):
        native.decode(whole, [384], [0], [[0]], cos, sin)
    with pytest.raises(ValueError, match="block table"):  # position 20 needs a second block of 16
        native.decode(whole, [7], [20], [[0]], cos, sin)
    with pytest.raises(ValueError, match="decode: 2 ids, 1 positions"):
        native.decode(whole, [7, 8], [0], [[0], [1]], cos, sin)
