"""Weight-only int8: the packed kernel against float math on the same weights, and the model against float32."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swarm.kernels.moe import expert_ffn
from swarm.runtime import Engine, SamplingParams
from swarm.runtime.loader import load_model
from swarm.runtime.model import Linear, MoE
from swarm.runtime.quant import Int8Linear, Int8MoE, quantize_int8, quantize_rows
from swarm.runtime.random_model import tiny_config, write_random_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("q"), tiny_config(vocab_size=300))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_rows_round_trip_within_half_a_step():
    w = torch.randn(3, 20, 64) * torch.logspace(-3, 1, 20)[:, None]  # rows of very different magnitude
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and q.abs().max() <= 127
    step = scale.float()[..., None]
    assert ((q.float() * step - w).abs() <= 0.5 * step + 1e-12).all()


def test_int8_linear_matches_float_math_on_its_weights():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 48, bias=True)
    with torch.no_grad():
        lin.weight.normal_(0, 0.1, generator=g)
    q = Int8Linear(lin)
    x = torch.randn(2, 5, 64, generator=g)
    deq = q.weight.float() * q.scale.float()[:, None]
    # the only difference left is the bfloat16 rounding of activations and outputs
    assert rel(q(x), F.linear(x, deq, lin.bias)) < 1e-2
    assert rel(q(x), lin(x)) < 2e-2


def test_int8_experts_match_the_grouped_ffn_on_their_weights(folder):
    model = quantize_int8(load_model(folder, dtype=torch.float32))
    moe = next(m for m in model.modules() if isinstance(m, MoE))
    assert isinstance(moe, Int8MoE) and moe.gate_up.dtype == torch.int8
    g = torch.Generator().manual_seed(1)
    T, K, E = 9, moe.top_k, moe.gate_up.shape[0]
    x = torch.randn(T, moe.gate_up.shape[2], generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    weights = torch.rand(T, K, generator=g)
    gate_up = moe.gate_up.float() * moe.gate_up_scale.float()[..., None]
    down = moe.down.float() * moe.down_scale.float()[..., None]
    assert rel(moe.experts(x, weights, ids), expert_ffn(x, gate_up, down, weights, ids)) < 2e-2


def test_int8_engine_logits_stay_close_to_float32_and_generation_runs(folder):
    f32, i8 = Engine.from_pretrained(folder), Engine.from_pretrained(folder, quantize="int8")
    kinds = {type(m).__name__ for m in i8.model.modules()}
    assert {"Int8Linear", "Int8MoE"} <= kinds
    assert type(i8.model.layers[0].mlp.router) is Linear  # the router stays float32
    ids = f32.tokenizer.encode("The baker sells bread to the guard at the market")
    a, b = f32.logits(ids), i8.logits(ids)
    err = (a - b).abs().amax(-1)  # [positions]
    print(f"int8 |logit diff| per position: median {err.median().item():.4f}, max {err.max().item():.4f} "
          f"(logits up to {a.abs().max().item():.2f})")
    # a position whose top-k experts were a near tie may route differently under int8 and move further (seen:
    # one position of 32 at 0.48 once a tokenizer release changed the ids); all others stay close
    assert (err < 0.15).float().mean() >= 0.9 and err.max() < 1.0
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    out = i8.generate(["The guard", "Once upon"], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [6, 6]


def test_int8_refuses_what_it_cannot_run(folder, tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        Engine.from_pretrained(folder, quantize="int4")
    odd = write_random_model(tmp_path, tiny_config(vocab_size=300, hidden_size=60, num_heads=4))
    with pytest.raises(ValueError, match="multiple of 8"):
        quantize_int8(load_model(odd, dtype=torch.float32))
    with pytest.raises(ValueError, match="CPU path"):
        quantize_int8(load_model(folder, dtype=torch.float32).to("meta"))
