"""Q8_0 / Q4_0, bf16 / f16 and per-row int8 weights in the engine: logits and decode steps (fused blocks
included) against their reference (bf16 / f16: the float32 engine holding the same widened weights, bit for
bit; Q8_0 / Q4_0 and int8: the torch kernels, which compute the same product on the dequantised weights, Q8_0 /
Q4_0's activations rounded to Q8_0 blocks as the native ones do), greedy generation, weight bytes, and what is
refused."""

import pytest
import torch

from swarm.kernels import quant
from swarm.kernels.native import build
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.model import Linear, MoE
from swarm.runtime.quant import BlockLinear, BlockMoE
from swarm.runtime.random_model import tiny_config, write_random_model
from tests.runtime.test_fused import _decode_logits

pytestmark = pytest.mark.skipif(not build.available(), reason="the native CPU kernels cannot be built here")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = tiny_config("qwen3_moe", vocab_size=384, hidden_size=64, num_heads=4, num_kv_heads=2, num_experts=4)
    return write_random_model(tmp_path_factory.mktemp("blocks"), cfg)


def dequantised_twin(folder, engine: Engine, **config) -> Engine:
    """A float32 engine whose weights are `engine`'s blocks dequantised."""
    twin = Engine.from_pretrained(folder, config=EngineConfig(**config))
    mods = dict(twin.model.named_modules())
    with torch.no_grad():
        for name, m in engine.model.named_modules():
            if isinstance(m, BlockLinear):
                mods[name].weight.copy_(quant.dequantize(*m.blocks))
            elif isinstance(m, BlockMoE):
                gate_up, down = m.expert_blocks
                mods[name].gate_up.copy_(quant.dequantize(*gate_up))
                mods[name].down.copy_(quant.dequantize(*down))
    return twin


@pytest.mark.parametrize("fmt", quant.FORMATS)
def test_block_engine_equals_the_float_engine_on_its_dequantised_weights(folder, monkeypatch, fmt):
    engine = Engine.from_pretrained(folder, quantize=fmt)
    kinds = {type(m) for m in engine.model.modules()}
    assert {BlockLinear, BlockMoE} <= kinds and type(engine.model.lm_head) is BlockLinear
    assert all(type(m.router) is Linear for m in engine.model.modules() if isinstance(m, MoE))  # float32 router
    assert engine.fused is not None and engine.fused.layers[0].attention is not None
    ids = list(range(5, 45))
    tokens, logits, calls = _decode_logits(engine, monkeypatch)  # decode: the blocks read in place, fused
    assert calls == {"attention": 0, "moe": 0, "whole": len(logits)}  # tokens to logits in one call a step
    if fmt in quant.HALF:  # the float32 engine on the widened weights, bit for bit
        twin = dequantised_twin(folder, engine)
        assert torch.equal(engine.logits(ids), twin.logits(ids))  # prefill: widened per call, torch's GEMM
        ref_tokens, ref_logits, _ = _decode_logits(twin, monkeypatch)
        assert tokens == ref_tokens and all(torch.equal(a, b) for a, b in zip(logits, ref_logits, strict=True))
    else:  # the torch kernels' arithmetic (Q8_0 / Q4_0: activations rounded), up to the float32 sums' order
        monkeypatch.setenv("SWARM_KERNELS", "torch")
        reference = Engine.from_pretrained(folder, quantize=fmt)
        monkeypatch.delenv("SWARM_KERNELS")
        assert reference.fused is None
        assert torch.allclose(engine.logits(ids), reference.logits(ids), atol=1e-4, rtol=1e-4)
        ref_tokens, ref_logits, _ = _decode_logits(reference, monkeypatch)
        assert tokens == ref_tokens
        assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(logits, ref_logits, strict=True))
    # and the modules (no fused blocks) give the same steps
    plain = Engine.from_pretrained(folder, config=EngineConfig(fused_decode=False), quantize=fmt)
    _, plain_logits, _ = _decode_logits(plain, monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(plain_logits, logits, strict=True))


@pytest.mark.parametrize("fmt", quant.FORMATS)
def test_block_engine_stays_close_to_float32_and_generates(folder, fmt):
    f32, q = Engine.from_pretrained(folder), Engine.from_pretrained(folder, quantize=fmt)
    ids = list(range(5, 37))
    a, b = f32.logits(ids), q.logits(ids)
    # random weights spread evenly over each block are q4_0's worst case: 4 bits leave about 10% noise per weight
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).median().item()
    print(f"{fmt}: median cosine of the logits to float32 {cos:.4f}")
    assert cos > (0.9 if fmt == "q4_0" else 0.999), cos
    out = q.generate(["The guard", "Once upon"], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [6, 6]


def test_torch_kernels_run_the_blocks_too(folder, monkeypatch):
    engine = Engine.from_pretrained(folder, quantize="q4_0")
    ids = list(range(5, 25))
    native = engine.logits(ids)
    monkeypatch.setenv("SWARM_KERNELS", "torch")
    torch_engine = Engine.from_pretrained(folder, quantize="q4_0")
    assert torch_engine.fused is None
    assert torch.allclose(torch_engine.logits(ids), native, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fmt", list(quant.HALF))
def test_half_weights_take_half_the_bytes(folder, fmt):
    def weight_bytes(engine: Engine) -> int:
        return sum(p.numel() * p.element_size() for p in engine.model.parameters() if p.dim() >= 2)

    f32, half = Engine.from_pretrained(folder), Engine.from_pretrained(folder, quantize=fmt)
    routers = sum(m.router.weight.numel() * 4 for m in f32.model.modules() if isinstance(m, MoE))
    embed = f32.model.embed.weight.numel() * 4  # embeddings are looked up, not multiplied: kept float32
    assert weight_bytes(half) == (weight_bytes(f32) - routers - embed) // 2 + routers + embed


def test_int8_weights_take_a_quarter_of_the_bytes(folder):
    f32, q = Engine.from_pretrained(folder), Engine.from_pretrained(folder, quantize="int8")
    kept = {id(m.router.weight) for m in f32.model.modules() if isinstance(m, MoE)} | {id(f32.model.embed.weight)}
    floats = sum(p.numel() for p in f32.model.parameters() if p.dim() >= 2 and id(p) not in kept)
    assert sum(p.numel() for p in q.model.parameters() if p.dtype is torch.int8) == floats
    rows = sum(p.numel() for n, p in q.model.named_parameters() if n.endswith("scale"))  # a float32 scale a row
    assert rows == sum(p.shape[:-1].numel() for p in f32.model.parameters() if p.dim() >= 2 and id(p) not in kept)


@pytest.mark.parametrize("fmt", quant.WIDENED)
def test_widened_weights_take_any_width(tmp_path, monkeypatch, fmt):
    cfg = tiny_config("qwen3_moe", vocab_size=128, hidden_size=48, num_heads=4, num_kv_heads=2, num_experts=4)
    folder = write_random_model(tmp_path / "m", cfg)
    engine = Engine.from_pretrained(folder, quantize=fmt)
    twin = dequantised_twin(folder, engine)
    ids = list(range(5, 25))
    if fmt in quant.HALF:
        assert torch.equal(engine.logits(ids), twin.logits(ids))
    else:  # the same product as the twin's up to where the row's scale comes in
        assert torch.allclose(engine.logits(ids), twin.logits(ids), atol=1e-4, rtol=1e-4)


def test_widths_that_do_not_split_into_blocks_are_refused(tmp_path):
    cfg = tiny_config("qwen3_moe", vocab_size=128, hidden_size=48, num_heads=4, num_kv_heads=2, num_experts=4)
    folder = write_random_model(tmp_path / "m", cfg)
    with pytest.raises(ValueError, match="multiple of 32"):
        Engine.from_pretrained(folder, quantize="q8_0")
    with pytest.raises(ValueError, match="'q4_0'"):
        Engine.from_pretrained(folder, quantize="q5_0")


def test_quantising_needs_the_model_on_the_cpu(folder):
    from swarm.runtime.loader import load_model
    from swarm.runtime.quant import quantize_blocks

    with pytest.raises(ValueError, match="CPU path"):
        quantize_blocks(load_model(folder, dtype=torch.float32).to("meta"), "int8")
