"""Half precision: which dtype an engine computes in (the checkpoint's bf16/fp16 on CUDA, float32 on the CPU),
the model computing in half precision (through the torch kernels on the CPU), and (the `cuda` mark, skipped
without a GPU) bfloat16 / float16 engines on CUDA against the float32 CPU engine on the same rounded weights."""

from __future__ import annotations

import json

import pytest
import torch

from swarm.kernels.rope import apply_rotary
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.engine import compute_dtype
from swarm.runtime.loader import load_model
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.runtime.tokenizer import Tokenizer

HALVES = [torch.bfloat16, torch.float16]


def _with_dtype(folder, named: str):
    config = folder / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "torch_dtype": named}))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384))


def test_the_default_dtype_is_the_checkpoint_s_half_on_cuda_and_float32_on_the_cpu(tmp_path):
    folder = _with_dtype(write_random_model(tmp_path / "m", tiny_config(vocab_size=128)), "bfloat16")
    assert compute_dtype(folder, "cuda", None) is torch.bfloat16
    assert compute_dtype(folder, "cpu", None) is torch.float32
    assert compute_dtype(folder, "cuda", "float32") is torch.float32
    assert compute_dtype(folder, "cuda", torch.float16) is torch.float16
    _with_dtype(folder, "float32")
    assert compute_dtype(folder, "cuda", None) is torch.float32
    with pytest.raises(ValueError, match="bfloat16, float16"):
        compute_dtype(folder, "cuda", "float64")
    with pytest.raises(ValueError, match="quantize='bf16'"):
        compute_dtype(folder, "cpu", "bfloat16")


def test_the_cpu_engine_stays_float32_and_refuses_half_compute(folder):
    engine = Engine.from_pretrained(folder)
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="the CPU computes in float32"):
        Engine.from_pretrained(folder, dtype="float16")


@pytest.mark.parametrize("dtype", HALVES)
def test_rotation_keeps_half_heads_half_and_rotates_in_float32(dtype):
    g = torch.Generator().manual_seed(0)
    x, angle = torch.randn(5, 4, 16, generator=g), torch.rand(5, 8, generator=g) * 6
    cos, sin = torch.cat((angle.cos(),) * 2, -1), torch.cat((angle.sin(),) * 2, -1)
    got = apply_rotary(x.to(dtype), cos, sin)
    assert got.dtype == dtype
    assert torch.equal(got, apply_rotary(x.to(dtype).float(), cos, sin).to(dtype))
    assert torch.equal(apply_rotary(x, cos, sin), x * cos[:, None] + torch.cat((-x[..., 8:], x[..., :8]), -1)
                       * sin[:, None])  # float32: the same arithmetic as before


def rounded_float32_engine(folder, dtype: torch.dtype) -> Engine:
    """The float32 CPU engine holding the checkpoint's weights rounded to `dtype`."""
    engine = Engine.from_pretrained(folder)
    with torch.no_grad():
        for p in engine.model.parameters():
            p.copy_(p.to(dtype).float())
    return engine


def close_at_most_positions(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """Logits [T, V] of a half engine against float32 on the same rounded weights. Activations are rounded to
    8 (bfloat16) or 11 (float16) mantissa bits between layers; where that flips a near-tie in the routing, a
    position's experts differ and its logits move further (seen with bfloat16 on 1 position in 40 of some
    random MoE checkpoints), so nine positions in ten must be close."""
    assert got.dtype == torch.float32
    tol = (0.05 if dtype is torch.bfloat16 else 0.01) * (1 + want.abs().max().item())
    err = (got.cpu() - want).abs().amax(-1)  # [T]
    assert (err <= tol).float().mean().item() >= 0.9, err


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("family", ["qwen3_moe", "gemma2", "phi3"])
def test_the_model_computes_in_half_precision(tmp_path, family, dtype, monkeypatch):
    """What CUDA runs in bfloat16 / float16, through the torch kernels on the CPU: the dtypes stay half from
    the embedding to the KV cache (the rotation included), the logits come back float32 and close to float32's."""
    monkeypatch.setenv("SWARM_KERNELS", "torch")
    folder = write_random_model(tmp_path / family, tiny_config(family, vocab_size=384))
    half = Engine(load_model(folder, dtype=dtype), Tokenizer.from_pretrained(folder))
    assert {p.dtype for p in half.model.parameters()} == {dtype} and half.pool.k[0].dtype == dtype
    assert half.fused is None
    ids = list(range(5, 45))
    close_at_most_positions(half.logits(ids), rounded_float32_engine(folder, dtype).logits(ids), dtype)
    out = half.generate([ids[:20], ids[:30]], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [4, 4]


def on_cuda(test):
    """The `cuda` mark, skipped without a GPU."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the engine's Triton path)")
    return pytest.mark.cuda(skip(test))


@on_cuda
@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("graphs", [True, False])
def test_half_engine_on_cuda_follows_the_float32_engine_on_its_rounded_weights(folder, dtype, graphs):
    gpu = Engine.from_pretrained(folder, config=EngineConfig(cuda_graphs=graphs), device="cuda", dtype=dtype)
    assert {p.dtype for p in gpu.model.parameters()} == {dtype} and gpu.pool.k[0].dtype == dtype
    ids = list(range(5, 45))
    close_at_most_positions(gpu.logits(ids), rounded_float32_engine(folder, dtype).logits(ids), dtype)
    greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    out = gpu.generate([ids[:20], ids[:30]], greedy)
    assert [len(c.token_ids) for c in out] == [8, 8]


@on_cuda
def test_the_checkpoint_s_half_dtype_is_the_cuda_default(tmp_path):
    folder = _with_dtype(write_random_model(tmp_path / "m", tiny_config(vocab_size=128)), "bfloat16")
    assert next(Engine.from_pretrained(folder, device="cuda").model.parameters()).dtype is torch.bfloat16
    assert next(Engine.from_pretrained(folder).model.parameters()).dtype is torch.float32

