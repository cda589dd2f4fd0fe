"""The native C kernels (kernels/native) against the torch references, and how the CPU picks them."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from swarm.kernels import attention, lora, moe, norm, registry
from swarm.kernels.native import build, ops
from swarm.kernels.rope import apply_rotary

pytestmark = pytest.mark.skipif(not build.available(), reason="the native kernels cannot be built here "
                                "(no C compiler or no AVX2): the CPU runs the torch kernels")


def experts(g, T, D, E, I, K):
    x = torch.randn(T, D, generator=g)
    gate_up = torch.randn(E, 2 * I, D, generator=g) / D**0.5
    down = torch.randn(E, D, I, generator=g) / I**0.5
    weights, ids = moe.route(torch.randn(T, E, generator=g), K, "softmax_topk", True)
    return x, gate_up, down, weights, ids


# shapes with tails everywhere: widths and hidden sizes not multiples of 4 or 8, one token, top-1, many tokens
@pytest.mark.parametrize("T,D,E,I,K", [(1, 64, 4, 32, 2), (5, 48, 4, 20, 2), (3, 37, 3, 13, 1), (33, 40, 8, 24, 2),
                                       (200, 64, 6, 36, 3)])
def test_expert_ffn_matches_torch(T, D, E, I, K):
    x, gate_up, down, weights, ids = experts(torch.Generator().manual_seed(T), T, D, E, I, K)
    got, ref = ops.expert_ffn(x, gate_up, down, weights, ids), moe.expert_ffn(x, gate_up, down, weights, ids)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), (got - ref).abs().max()


def test_expert_ffn_is_batch_invariant():
    """A token's output is bit-identical whatever other tokens share the call (and their routing)."""
    g = torch.Generator().manual_seed(1)
    x, gate_up, down, weights, ids = experts(g, 24, 40, 6, 20, 2)
    batched = ops.expert_ffn(x, gate_up, down, weights, ids)
    for t in (0, 7, 23):
        alone = ops.expert_ffn(x[t : t + 1], gate_up, down, weights[t : t + 1], ids[t : t + 1])
        assert torch.equal(alone[0], batched[t])
    pair = ops.expert_ffn(x[3:5], gate_up, down, weights[3:5], ids[3:5])
    assert torch.equal(pair, batched[3:5])


def test_expert_ffn_rejects_bad_input():
    x, gate_up, down, weights, ids = experts(torch.Generator().manual_seed(2), 4, 16, 4, 8, 2)
    with pytest.raises(ValueError, match=r"expert ids must lie in \[0, 4\)"):
        ops.expert_ffn(x, gate_up, down, weights, ids + 3)
    with pytest.raises(ValueError, match="shapes"):
        ops.expert_ffn(x, gate_up, down[:, :, :4], weights, ids)
    # float32 is what the C code computes; other dtypes run the torch kernel
    half = ops.expert_ffn(x.double(), gate_up.double(), down.double(), weights, ids)
    assert half.dtype == torch.float64


# rows 1..LINEAR_MAX_ROWS (odd counts leave a single row), widths and depths with tails, 3-D input; small
# weights run on one thread, the last (60k weights) on all
@pytest.mark.parametrize("shape,N,bias", [((1, 64), 48, False), ((7, 37), 13, True), ((32, 40), 66, True),
                                          ((2, 5, 24), 9, False), ((9, 200), 301, True)])
def test_linear_matches_torch(shape, N, bias):
    g = torch.Generator().manual_seed(N)
    x, w = torch.randn(*shape, generator=g), torch.randn(N, shape[-1], generator=g)
    b = torch.randn(N, generator=g) if bias else None
    got = ops.linear(x, w, b)
    assert got.shape == (*shape[:-1], N)
    assert torch.allclose(got, F.linear(x, w, b), atol=1e-5, rtol=1e-4)
    # non-contiguous input and weight give the same numbers
    assert torch.equal(ops.linear(x.transpose(-1, -2).contiguous().transpose(-1, -2), w.t().contiguous().t(), b), got)


@pytest.mark.parametrize("N", [24, 1000])  # one thread, both threads
def test_linear_is_batch_invariant_and_hands_big_batches_to_torch(N):
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(ops.LINEAR_MAX_ROWS, 40, generator=g), torch.randn(N, 40, generator=g)
    batched = ops.linear(x, w)
    for t in (0, 5, ops.LINEAR_MAX_ROWS - 1):
        assert torch.equal(ops.linear(x[t : t + 1], w)[0], batched[t])
    big = torch.randn(ops.LINEAR_MAX_ROWS + 1, 40, generator=g)
    assert torch.equal(ops.linear(big, w), F.linear(big, w))  # MKL's packed GEMM from here on
    assert ops.linear(x.double(), w.double()).dtype == torch.float64  # other dtypes: torch's kernel
    with pytest.raises(ValueError, match="shapes"):
        ops.linear(x, w[:, :8])


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_model_modules_run_native_kernels_but_not_under_autograd_or_a_trace(monkeypatch):
    """Inference runs the C code; training (autograd) and a trace (ONNX export) get torch's ops, which
    have a backward and are what an exported graph can hold."""
    from swarm.runtime.model import Linear, RMSNorm, kernels

    monkeypatch.delenv(registry.ENV, raising=False)
    calls = []
    real = ops.library
    monkeypatch.setattr(ops, "library", lambda: calls.append(1) or real())
    model = torch.nn.Sequential(Linear(16, 8), RMSNorm(8, 1e-6))
    x = torch.randn(3, 16)
    assert kernels(model[0], x.device, "linear") == (ops.linear,)
    with torch.inference_mode():
        y = model(x)
    assert len(calls) == 2
    ref = F.linear(x, model[0].weight, model[0].bias)
    ref = model[1].weight * ref * torch.rsqrt(ref.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(y, ref, atol=1e-5)
    model(x).sum().backward()  # weights require grad: torch's kernels, and gradients reach them
    assert model[0].weight.grad is not None and model[1].weight.grad is not None and len(calls) == 2
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    assert "aten::linear" in str(traced.inlined_graph) and len(calls) == 2
    assert torch.allclose(traced(x), y, atol=1e-5)


@pytest.mark.parametrize("mode,renorm", [("softmax_topk", True), ("softmax_topk", False), ("topk_softmax", False)])
@pytest.mark.parametrize("T,E,K", [(1, 8, 2), (33, 60, 4), (5, 3, 3), (4, 16, 1)])
def test_route_matches_torch(T, E, K, mode, renorm):
    g = torch.Generator().manual_seed(T * E + K)
    logits = torch.randn(T, E, generator=g)
    weights, ids = ops.route(logits, K, mode, renorm)
    ref_w, ref_ids = moe.route(logits, K, mode, renorm)
    assert ids.dtype == torch.int64 and torch.equal(ids, ref_ids)
    assert weights.dtype == torch.float32 and torch.allclose(weights, ref_w, atol=1e-6, rtol=1e-5)
    w1, i1 = ops.route(logits[-1:], K, mode, renorm)  # a row's routing does not depend on the rest
    assert torch.equal(w1, weights[-1:]) and torch.equal(i1, ids[-1:])
    # what the C code does not take goes to torch: a non-float32 input, an unknown k
    assert torch.equal(ops.route(logits.double(), K, mode, renorm)[1], ref_ids)
    with pytest.raises(RuntimeError):
        ops.route(logits, E + 1, mode, renorm)  # torch's own error for k > E


@pytest.mark.parametrize("R,V", [(1, 8), (4, 37), (32, 8192), (3, 5)])
def test_argmax_matches_torch_with_ties_and_nans(R, V):
    g = torch.Generator().manual_seed(V)
    x = torch.randn(R, V, generator=g)
    x[0, V // 2] = x[0, V - 1] = x[0].max() + 1  # a tie: the first one wins
    if R > 2:
        x[1, V - 1] = float("nan")  # a NaN counts as the largest
        x[2] = float("-inf")  # all -inf: index 0
    if R > 3:
        x[3, V - 1] = x[3].max() + 2  # the largest last: past the 8-wide blocks when V % 8
    got = ops.argmax(x)
    assert got.dtype == torch.int64 and torch.equal(got, x.argmax(-1)), (got, x.argmax(-1))
    assert torch.equal(ops.argmax(x[1:2]), got[1:2])


@pytest.mark.parametrize("shape", [(5, 24), (4, 3, 16), (1, 37)])
def test_rms_norm_matches_torch_on_rows_inside_a_wider_tensor(shape):
    g = torch.Generator().manual_seed(len(shape))
    wide = torch.randn(*shape[:-1], shape[-1] + 9, generator=g)  # rows of a fused projection: strided
    x = wide[..., : shape[-1]] if len(shape) == 2 else torch.randn(*shape, generator=g)
    if len(shape) == 3:  # heads sliced out of a [T, (R + 2) * D] projection
        x = torch.randn(shape[0], (shape[1] + 2) * shape[2], generator=g)[:, : shape[1] * shape[2]].view(shape)
    w = torch.randn(shape[-1], generator=g)
    got = ops.rms_norm(x, w, 1e-5)
    assert got.is_contiguous() and torch.allclose(got, norm.rms_norm(x, w, 1e-5), atol=1e-5, rtol=1e-5)
    assert torch.equal(ops.rms_norm(x[:1], w, 1e-5), got[:1])  # a row's result does not depend on the rest
    with pytest.raises(ValueError, match="rms_norm"):
        ops.rms_norm(x, w[:-1], 1e-5)


@pytest.mark.parametrize("T,H,d", [(3, 2, 16), (1, 5, 20), (6, 1, 6)])
def test_rotary_rotates_strided_heads_in_place_like_torch(T, H, d):
    g = torch.Generator().manual_seed(d)
    qkv = torch.randn(T, (H + 2) * d, generator=g)
    q = qkv[:, : H * d].view(T, H, d)  # heads of a fused projection, as the model has them
    cos, sin = torch.randn(T, d, generator=g), torch.randn(T, d, generator=g)
    ref = apply_rotary(q.clone(), cos, sin)
    rest = qkv[:, H * d :].clone()
    got = ops.rotary(q, cos, sin)
    assert got.data_ptr() == q.data_ptr() and torch.allclose(got, ref, atol=1e-6)
    assert torch.equal(qkv[:, H * d :], rest)  # k and v untouched
    with pytest.raises(ValueError, match="rotary"):
        ops.rotary(q, cos[:, :-2], sin[:, :-2])


def paged(g, lens, G, d, bs, spare=3):
    """A shuffled paged cache holding sequences of `lens` tokens: (k_cache, v_cache, table [B, nb], lens)."""
    B, nb = len(lens), max(-(-n // bs) for n in lens)
    N = B * nb + spare
    kc, vc = torch.randn(N, bs, G, d, generator=g), torch.randn(N, bs, G, d, generator=g)
    table = torch.randperm(N, generator=g)[: B * nb].view(B, nb)
    return kc, vc, table, torch.tensor(lens)[:, None]


@pytest.mark.parametrize("H,G,d,bs,lens", [(6, 2, 64, 16, [5, 40, 17]), (4, 4, 16, 4, [1, 9]),
                                           (8, 1, 12, 8, [7, 20, 3]), (4, 2, 128, 16, [130, 64]),
                                           (6, 2, 64, 16, [600] * 4)])
@pytest.mark.parametrize("window", [None, 6])
def test_decode_attention_matches_torch(H, G, d, bs, lens, window):
    g = torch.Generator().manual_seed(len(lens) + d)
    kc, vc, table, n = paged(g, lens, G, d, bs)
    pos = torch.arange(table.shape[1] * bs)[None]
    mask = pos < n
    if window is not None:
        mask &= pos >= n - window
    q = torch.randn(len(lens), H, d, generator=g)
    got = ops.decode_attention(q, kc, vc, table, mask, 0.125)
    ref = attention.decode_attention(q, kc, vc, table, mask, 0.125)
    assert torch.allclose(got, ref, atol=2e-6, rtol=1e-5), (got - ref).abs().max()


# chunks of a sequence after a cached prefix (Q < S), whole sequences (Q = S), one token; tails in d, in the block
# size and in the query tile of 8; grouped, multi-query and plain heads
@pytest.mark.parametrize("H,G,d,bs,Q,S", [(6, 2, 64, 16, 37, 100), (4, 4, 20, 16, 7, 40), (8, 1, 12, 5, 23, 23),
                                          (3, 1, 16, 16, 1, 17), (4, 2, 128, 16, 130, 130)])
@pytest.mark.parametrize("window", [None, 6])
def test_prefill_attention_matches_torch(H, G, d, bs, Q, S, window):
    g = torch.Generator().manual_seed(Q + d)
    kc, vc, table, _ = paged(g, [S], G, d, bs)
    q = torch.randn(Q, H, d, generator=g)
    got = ops.prefill_attention(q, kc, vc, table[0], S, 0.3, window)
    ref = attention.prefill_attention(q, kc, vc, table[0], S, 0.3, window)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()


def test_prefill_attention_rejects_bad_input():
    g = torch.Generator().manual_seed(4)
    kc, vc, table, _ = paged(g, [20], 2, 16, 8)
    q = torch.randn(5, 4, 16, generator=g)
    with pytest.raises(ValueError, match="context_len 30 must cover"):
        ops.prefill_attention(q, kc, vc, table[0], 30, 0.25)
    with pytest.raises(ValueError, match="window"):
        ops.prefill_attention(q, kc, vc, table[0], 20, 0.25, 0)
    with pytest.raises(ValueError, match="shapes"):
        ops.prefill_attention(q[:, :3], kc, vc, table[0], 20, 0.25)


def test_decode_attention_is_batch_invariant_and_reads_in_place():
    g = torch.Generator().manual_seed(3)
    kc, vc, table, n = paged(g, [33, 70, 5], 2, 32, 16)
    mask = torch.arange(table.shape[1] * 16)[None] < n
    q = torch.randn(3, 4, 32, generator=g)
    batched = ops.decode_attention(q, kc, vc, table, mask, 0.2)
    alone = ops.decode_attention(q[1:2], kc, vc, table[1:2], mask[1:2], 0.2)
    assert torch.equal(alone[0], batched[1])
    with pytest.raises(ValueError, match="contiguous"):
        ops.decode_attention(q, kc.transpose(0, 1).contiguous().transpose(0, 1), vc, table, mask, 0.2)
    with pytest.raises(ValueError, match="shapes"):
        ops.decode_attention(q[:, :3], kc, vc, table, mask, 0.2)
    many = torch.randn(3, 2 * ops.MAX_HEADS, 32, generator=g)  # more heads than the C code holds: torch's kernel
    assert torch.equal(ops.decode_attention(many, kc, vc, table, mask, 0.2),
                       attention.decode_attention(many, kc, vc, table, mask, 0.2))


def test_cpu_runs_torch_kernels_with_a_warning_when_native_cannot_build(monkeypatch):
    monkeypatch.delenv(registry.ENV, raising=False)
    monkeypatch.setattr(registry, "_native_warned", False)
    monkeypatch.setattr(build, "_library", None)
    monkeypatch.setattr(build, "_error", build.NativeUnavailable("no C compiler found (set CC, or install gcc)"))
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert registry.get("moe_expert_ffn", "cpu") is moe.expert_ffn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert registry.get("decode_attention", "cpu") is attention.decode_attention
    monkeypatch.setenv(registry.ENV, "native")  # asked for by name: an error, not a fallback
    with pytest.raises(registry.KernelUnavailable, match="no C compiler"):
        registry.get("moe_expert_ffn", "cpu")


def test_native_backend_is_cpu_only(monkeypatch):
    monkeypatch.setenv(registry.ENV, "native")
    assert registry.get("moe_expert_ffn", "cpu") is ops.expert_ffn
    assert registry.get("lora_gather", "cpu") is lora.lora_gather  # no native kernel: torch's
    with pytest.raises(registry.KernelUnavailable, match="run on the CPU"):
        registry.get("moe_expert_ffn", "cuda")


def test_a_compiler_without_the_vnni_flags_falls_back_to_avx2_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "isa_flags", lambda: ["-mno-such-instruction-set"])
    with pytest.warns(RuntimeWarning, match="without VNNI .*-mno-such-instruction-set"):
        lib = build._load_best()
    assert lib.swarm_cpu_supported() == 1
    assert [p.name for p in (tmp_path / "cache" / "kernels").glob("*.so")] == [build._build([]).name]


def test_a_failed_build_says_why(monkeypatch, tmp_path):
    bad = tmp_path / "cpu.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(build, "SOURCE", bad)
    monkeypatch.setenv("SWARM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(build.NativeUnavailable, match="failed to build cpu.c"):
        build._build()
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))  # nothing half-written is left behind
