"""Q8_0 / Q4_0 blocks, bf16 / f16 and per-row int8 weights: packing against its definition, and the native
kernels against the torch reference. Halves against float32 math on the widened weights, bit for bit (a half is
widened into the float the widened copy holds and enters the float32 kernel's FMAs in the same order); int8 as
float32 math on its widened integers times the row's scale, bit for bit; Q8_0 / Q4_0 against float32 math on the
dequantised weights and the activations rounded to Q8_0 blocks, up to the order of the float32 sums (the C code
sums integer block products, then scales them)."""

import pytest
import torch

from swarm.kernels import moe, quant
from swarm.kernels.native import build, ops

native = pytest.mark.skipif(not build.available(), reason="the native kernels cannot be built here")


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_blocks_round_trip_within_half_a_step(fmt):
    """q4_0 takes -8..7 steps, its scale set by the block's largest magnitude at -8: a weight of the other sign
    near that magnitude is clipped at +7, up to a whole step off (llama.cpp's rounding too)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, 96, generator=g) * torch.logspace(-3, 1, 5)[:, None]
    b = quant.quantize(w, fmt)
    assert b.shape == w.shape and b.scales.shape == (3, 5, 3) and b.scales.dtype == torch.float32
    assert b.values.dtype == (torch.int8 if fmt == "q8_0" else torch.uint8)
    assert b.values.shape[-1] == (96 if fmt == "q8_0" else 48)
    step = b.scales.abs().repeat_interleave(32, -1)
    bound = 0.5 if fmt == "q8_0" else 1.0
    assert ((quant.dequantize(*b) - w).abs() <= bound * step * (1 + 1e-6) + 1e-12).all()


def test_int8_rows_round_trip_within_half_a_step():
    w = torch.randn(3, 20, 40) * torch.logspace(-3, 1, 20)[:, None]  # rows of very different magnitude
    w[0, 0] = 0  # an all-zero row keeps a zero scale
    b = quant.quantize(w, "int8")
    assert b.shape == w.shape and b.values.dtype == torch.int8 and b.scales.shape == (3, 20)
    assert b.scales.dtype == torch.float32 and b.values.abs().max() == 127 and b.scales[0, 0] == 0
    step = b.scales[..., None]
    assert torch.equal(quant.dequantize(*b), b.values.float() * step)
    assert ((quant.dequantize(*b) - w).abs() <= 0.5 * step * (1 + 1e-6)).all()


@pytest.mark.parametrize("fmt", list(quant.HALF))
def test_half_formats_are_the_weight_rounded_once(fmt):
    w = torch.randn(3, 5, 40)
    b = quant.quantize(w, fmt)
    assert b.shape == w.shape and b.values.dtype == quant.HALF[fmt] and b.scales.numel() == 0
    assert b.values.element_size() * b.values.numel() == w.element_size() * w.numel() // 2
    assert torch.equal(b.values, w.to(quant.HALF[fmt])) and torch.equal(quant.dequantize(*b), b.values.float())


@native
@pytest.mark.parametrize("fmt", quant.WIDENED)
def test_rows_that_are_not_blocks_are_widened_for_the_float_kernel(fmt):
    b, x = quant.quantize(torch.randn(9, 40), fmt), torch.randn(2, 40)
    assert torch.equal(ops.block_linear(x, *b), ops.linear(x, quant.dequantize(*b)))
    E, I = 3, 24  # experts too
    gate_up, down = quant.quantize(torch.randn(E, 2 * I, 40), fmt), quant.quantize(torch.randn(E, 40, I), fmt)
    weights, ids = torch.rand(2, 2), torch.tensor([[0, 2], [1, 2]])
    assert torch.equal(ops.block_expert_ffn(x, gate_up, down, weights, ids),
                       ops.expert_ffn(x, quant.dequantize(*gate_up), quant.dequantize(*down), weights, ids))


def test_q4_0_layout_is_llama_cpp_s():
    """Byte j of a block: weight j in the low nibble, weight j + 16 in the high one; w = (q - 8) * scale."""
    q = torch.arange(32) % 16
    values = (q[:16] | (q[16:] << 4)).to(torch.uint8)[None]
    w = quant.dequantize(values, torch.tensor([[0.5]]), "q4_0")
    assert torch.equal(w[0], (q.float() - 8) * 0.5)


def test_refuses_rows_that_do_not_split_into_blocks():
    with pytest.raises(ValueError, match="blocks of 32"):
        quant.quantize(torch.randn(4, 40), "q8_0")
    with pytest.raises(ValueError, match="q8_0, q4_0"):
        quant.quantize(torch.randn(4, 64), "q5_0")


@native
@pytest.mark.parametrize("fmt", quant.FORMATS)
# one row (registers), two, three and up (a dequantised tile), a last tile narrower than 4, 3-D input, and more
# rows than decode (dequantise, then torch); the bigger weights run on every thread
@pytest.mark.parametrize("shape,N,bias", [((1, 64), 48, False), ((2, 96), 13, True), ((3, 32), 8, False),
                                          ((7, 384), 301, True), ((32, 256), 130, False), ((2, 5, 64), 9, True),
                                          ((1, 768), 1000, False), ((40, 64), 20, True)])
def test_block_linear_equals_the_float_kernel_on_the_dequantised_weight(fmt, shape, N, bias):
    g = torch.Generator().manual_seed(N)
    K = shape[-1]
    b = quant.quantize(torch.randn(N, K, generator=g), fmt)
    x, bb = torch.randn(*shape, generator=g), torch.randn(N, generator=g) if bias else None
    deq = quant.dequantize(*b)
    assert torch.equal(ops.dequantize(*b), deq)
    got = ops.block_linear(x, *b, bias=bb)
    if fmt in quant.HALF:
        assert torch.equal(got, ops.linear(x, deq, bb))
    elif fmt == "int8" and x.numel() <= ops.LINEAR_MAX_ROWS * K:  # each row's sum of x q, scaled once
        scaled = ops.linear(x, b.values.float()) * b.scales
        assert torch.equal(got, scaled if bb is None else scaled + bb)
    elif fmt == "int8":  # prefill's rows: torch's GEMM on the dequantised weight
        assert torch.allclose(got, ops.linear(x, deq, bb), atol=2e-6 * got.abs().max().item(), rtol=1e-5)
    else:  # one activation rounded differently would move its output by about 1e-3 of the largest
        assert torch.allclose(got, ops.linear(quant.round_activations(x), deq, bb),
                              atol=2e-6 * got.abs().max().item(), rtol=1e-5)
        plain = ops.linear(x, deq, bb)  # the rounding itself: small, and not nothing
        assert 0 < (got - plain).abs().max() < 0.02 * plain.abs().max()
    assert torch.allclose(got, quant.linear(x, *b, bias=bb), atol=2e-6 * got.abs().max().item(), rtol=1e-5)


def test_activations_round_to_q8_0_blocks():
    """d = max |x| / 127 per 32, q = round(x / d) to nearest even; an all-zero block stays zero."""
    x = torch.cat((torch.linspace(-2.54, 2.54, 32), torch.zeros(32), torch.full((32,), 0.5)))
    got = quant.round_activations(x)
    assert torch.allclose(got[:32], torch.round(x[:32] * (127 / 2.54)) * (2.54 / 127), rtol=1e-6)
    assert torch.equal(got[32:64], torch.zeros(32)) and torch.allclose(got[64:], x[64:])
    assert (got[:32] - x[:32]).abs().max() <= 0.5 * 2.54 / 127 * (1 + 1e-6)
    assert torch.equal(quant.activations(x, "bf16"), x)
    with pytest.raises(ValueError, match="blocks of 32"):
        quant.round_activations(torch.randn(40))


@native
@pytest.mark.parametrize("fmt", quant.FORMATS)
def test_block_linear_is_batch_invariant(fmt):
    g = torch.Generator().manual_seed(3)
    b = quant.quantize(torch.randn(70, 128, generator=g), fmt)
    x = torch.randn(32, 128, generator=g)
    batched = ops.block_linear(x, *b)
    for rows in (slice(0, 1), slice(5, 7), slice(3, 6), slice(0, 32)):
        assert torch.equal(ops.block_linear(x[rows], *b), batched[rows])


@native
@pytest.mark.skipif(not build.isa_flags(), reason="this CPU has no VNNI: the kernels build for AVX2 alone")
@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_vnni_and_avx2_builds_give_the_same_bits(fmt):
    """The VNNI integer dots sum the same integers as AVX2's maddubs / madd, so both builds agree exactly
    (odd block counts and 1 to 3 rows included: the paths Q4_0's block pairs take)."""
    g = torch.Generator().manual_seed(4)
    avx2, vnni = build.load([]), build.load()
    for K, M in ((96, 1), (128, 2), (160, 3), (384, 5)):
        b = quant.quantize(torch.randn(36, K, generator=g), fmt)
        x = torch.randn(M, K, generator=g)
        outs = []
        for lib in (avx2, vnni):
            out = torch.empty(M, 36)
            assert lib.swarm_qlinear(x.data_ptr(), M, K, ops.FORMATS[fmt], b.values.data_ptr(), b.scales.data_ptr(),
                                     36, None, out.data_ptr()) == 0
            outs.append(out)
        assert torch.equal(*outs), (K, M)
        assert torch.allclose(outs[0], quant.linear(x, *b), atol=1e-4, rtol=1e-4)


@native
def test_block_linear_refuses_mismatched_shapes_and_falls_back_off_the_fast_path():
    b = quant.quantize(torch.randn(16, 64), "q8_0")
    with pytest.raises(ValueError, match="block_linear"):
        ops.block_linear(torch.randn(2, 32), *b)
    # float64 activations run the torch reference
    out = ops.block_linear(torch.randn(2, 64, dtype=torch.float64), *b)
    assert out.dtype == torch.float64


@native
@pytest.mark.parametrize("fmt", quant.FORMATS)
@pytest.mark.parametrize("T,D,E,I,K", [(1, 64, 4, 32, 2), (5, 96, 4, 64, 2), (33, 64, 8, 32, 1), (200, 64, 6, 96, 3)])
def test_block_expert_ffn_equals_the_float_kernel_on_the_dequantised_experts(fmt, T, D, E, I, K):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, D, generator=g)
    gate_up = quant.quantize(torch.randn(E, 2 * I, D, generator=g) / D**0.5, fmt)
    down = quant.quantize(torch.randn(E, D, I, generator=g) / I**0.5, fmt)
    weights, ids = moe.route(torch.randn(T, E, generator=g), K, "softmax_topk", True)
    got = ops.block_expert_ffn(x, gate_up, down, weights, ids)
    dg, dd = quant.dequantize(*gate_up), quant.dequantize(*down)
    if fmt in quant.HALF:
        assert torch.equal(got, ops.expert_ffn(x, dg, dd, weights, ids))
    assert torch.allclose(got, quant.expert_ffn(x, gate_up, down, weights, ids), atol=1e-5, rtol=1e-4)
    for rows in (slice(0, 1), slice(T // 2, T)):  # each token's arithmetic is its own (batch-invariant)
        assert torch.equal(ops.block_expert_ffn(x[rows], gate_up, down, weights[rows], ids[rows]), got[rows])
