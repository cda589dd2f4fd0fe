"""Triton kernels against their torch references, and the kernel registry.

Every kernel test runs on two backends: the Triton interpreter on CPU tensors
(always) and the compiled kernels on a GPU (the `cuda` mark, skipped without
one). Triton decides between interpreting and compiling when it is imported
(its own helpers such as tl.max are jitted then), so one process cannot do
both: the interpreter runs happen in a child pytest started with
TRITON_INTERPRET=1 (`test_interpreter_runs_every_kernel_test`), and this
process keeps the compiled kernels for the GPU runs and the sm_90 compile check.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from swarm.kernels import attention, lora, moe, registry

triton = pytest.importorskip("triton")
from swarm.kernels.triton._checks import UnsupportedInput, interpreted  # noqa: E402

INTERPRETED = interpreted(triton.language.max)  # this process interprets triton
OPS = ("moe_route", "moe_ffn", "decode_attention", "prefill_attention", "lora_gather", "lora_segment")
ROOT = Path(__file__).resolve().parents[2]


class Backend:
    def __init__(self, device: str):
        self.device = device
        self.m = {n: importlib.import_module(f"swarm.kernels.triton.{n}") for n in OPS}

    def to(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(self.device) for t in tensors]


# Only the interpreted process has interpreter runs, so nothing shows up twice as skipped.
@pytest.fixture(params=["interpreter"] if INTERPRETED else [pytest.param("cuda", marks=pytest.mark.cuda)])
def tr(request) -> Backend:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here; the interpreter runs (a child process) cover the kernels")
    return Backend("cpu" if request.param == "interpreter" else "cuda")


def test_interpreter_runs_every_kernel_test():
    """The kernel tests, interpreted on CPU tensors in a child process with TRITON_INTERPRET=1."""
    if INTERPRETED:
        pytest.skip("this process is the interpreted run")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreter", str(Path(__file__))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 25, done.stdout[-2000:]


def close(got: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    got = got.float().cpu()
    err = (got - ref.float()).abs().max().item() if ref.numel() else 0.0
    assert err <= tol * (1 + ref.abs().max().item()), f"max |diff| {err}"


# -- MoE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,renormalize", [("softmax_topk", True), ("softmax_topk", False),
                                              ("topk_softmax", False)])
@pytest.mark.parametrize("T,E,K", [(37, 6, 2), (3, 8, 1), (5, 60, 4)])
def test_route_matches_torch(tr, mode, renormalize, T, E, K):
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(T * E))
    w, ids = tr.m["moe_route"].route(*tr.to(logits), K, mode, renormalize)
    rw, rids = moe.route(logits, K, mode, renormalize)
    assert w.dtype == torch.float32 and ids.dtype == torch.int64
    assert torch.equal(ids.cpu(), rids)
    close(w, rw, 1e-6)


def test_route_takes_half_logits(tr):
    """A bfloat16 / float16 engine's router logits: the softmax and top-k run in float32."""
    logits = torch.randn(9, 8, generator=torch.Generator().manual_seed(1))
    for dtype in (torch.bfloat16, torch.float16):
        w, ids = tr.m["moe_route"].route(*tr.to(logits.to(dtype)), 2, "softmax_topk", True)
        rw, rids = moe.route(logits.to(dtype).float(), 2, "softmax_topk", True)
        assert w.dtype == torch.float32 and torch.equal(ids.cpu(), rids)
        close(w, rw, 1e-6)


def _moe_inputs(T, D, I, E, K, routing, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    gate_up, down = torch.randn(E, 2 * I, D, generator=g) * 0.2, torch.randn(E, D, I, generator=g) * 0.2
    if routing == "even":
        ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    else:  # nearly every token on experts 0 and 1: several tiles per expert, most experts idle
        ids = torch.tensor([[0, 1]] * (T - 1) + [[E - 2, E - 1]])
    weights = torch.rand(T, K, generator=g)
    return x.to(dtype), gate_up.to(dtype), down.to(dtype), weights, ids


@pytest.mark.parametrize("T,D,I,E,K,routing", [
    (40, 48, 40, 6, 2, "even"),  # dims that are not multiples of the tiles
    (40, 48, 40, 6, 2, "skewed"),
    (1, 32, 64, 8, 2, "even"),  # one decode token
    (80, 32, 32, 4, 2, "even"),  # T*K > 16 E: 64-row tiles
])
def test_expert_ffn_matches_torch(tr, T, D, I, E, K, routing):
    x, gate_up, down, weights, ids = _moe_inputs(T, D, I, E, K, routing)
    got = tr.m["moe_ffn"].expert_ffn(*tr.to(x, gate_up, down, weights, ids))
    close(got, moe.expert_ffn(x, gate_up, down, weights, ids), 1e-5)


def test_expert_ffn_half_precision(tr):
    x, gate_up, down, weights, ids = _moe_inputs(24, 32, 32, 4, 2, "even", torch.float16)
    got = tr.m["moe_ffn"].expert_ffn(*tr.to(x, gate_up, down, weights, ids))
    assert got.dtype == torch.float16
    close(got, moe.expert_ffn(x.float(), gate_up.float(), down.float(), weights, ids), 1e-2)


def test_align_by_expert_tiles_hold_one_expert_each(tr):
    ids = torch.tensor([[0, 3], [3, 1], [3, 0], [1, 3]] * 5)  # expert 2 unused, expert 3 on 20 pairs
    pairs, tile_expert = tr.m["moe_ffn"].align_by_expert(*tr.to(ids), 4, 16)
    pairs, tile_expert, flat = pairs.cpu(), tile_expert.cpu(), ids.reshape(-1)
    real = pairs[pairs < flat.numel()]
    assert sorted(real.tolist()) == list(range(flat.numel()))  # every pair exactly once
    for tile, e in enumerate(tile_expert.tolist()):
        members = pairs[tile * 16 : (tile + 1) * 16]
        members = members[members < flat.numel()]
        if e == 4:  # past the end
            assert members.numel() == 0
        else:
            assert (flat[members.long()] == e).all() and members.numel() > 0


# -- attention ----------------------------------------------------------------------------


def _attention_inputs(B, H, G, d, bs, nb, lens, window=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = B * nb + 3
    q = torch.randn(B, H, d, generator=g)
    k_cache, v_cache = torch.randn(N, bs, G, d, generator=g), torch.randn(N, bs, G, d, generator=g)
    table = torch.randperm(N, generator=g)[: B * nb].view(B, nb)
    pos, lens = torch.arange(nb * bs)[None, :], torch.tensor(lens)[:, None]
    mask = pos < lens
    if window is not None:
        mask &= pos >= lens - window
    return q, k_cache, v_cache, table, mask


@pytest.mark.parametrize("B,H,G,d,bs,nb,lens,window", [
    (3, 6, 2, 64, 16, 2, [1, 17, 32], None),  # GQA, the benchmark model's heads
    (2, 4, 4, 20, 4, 5, [3, 20], None),  # multi-head; a head dim that is not a power of two
    (2, 8, 1, 32, 4, 12, [5, 47], None),  # multi-query; 12 blocks make three slices, some empty
    (2, 6, 3, 16, 8, 6, [40, 13], 10),  # sliding window: leading blocks have no visible key
])
def test_decode_attention_matches_torch(tr, B, H, G, d, bs, nb, lens, window):
    q, k_cache, v_cache, table, mask = _attention_inputs(B, H, G, d, bs, nb, lens, window)
    got = tr.m["decode_attention"].decode_attention(*tr.to(q, k_cache, v_cache, table, mask), 0.125)
    close(got, attention.decode_attention(q, k_cache, v_cache, table, mask, 0.125), 1e-5)


def test_decode_attention_bfloat16(tr):
    q, k_cache, v_cache, table, mask = _attention_inputs(2, 4, 2, 32, 16, 3, [9, 40])
    q, k_cache, v_cache = q.bfloat16(), k_cache.bfloat16(), v_cache.bfloat16()
    got = tr.m["decode_attention"].decode_attention(*tr.to(q, k_cache, v_cache, table, mask), 0.2)
    assert got.dtype == torch.bfloat16
    ref = attention.decode_attention(q.float(), k_cache.float(), v_cache.float(), table, mask, 0.2)
    close(got, ref, 1e-2)


def _prefill_inputs(Q, H, G, d, bs, C, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    nb = -(-C // bs)
    N = nb + 4
    q = torch.randn(Q, H, d, generator=g)
    k_cache, v_cache = torch.randn(N, bs, G, d, generator=g), torch.randn(N, bs, G, d, generator=g)
    blocks = torch.randperm(N, generator=g)[:nb]
    return q.to(dtype), k_cache.to(dtype), v_cache.to(dtype), blocks


@pytest.mark.parametrize("Q,H,G,d,bs,C,window", [
    (20, 6, 2, 64, 16, 20, None),  # GQA, no cached prefix, a partial last block
    (37, 4, 4, 20, 4, 70, None),  # multi-head after a prefix; head dim not a power of two; several query tiles
    (5, 8, 1, 32, 8, 29, None),  # multi-query after a prefix, a partial last block
    (30, 6, 3, 16, 8, 95, 12),  # sliding window: most of the prefix is out of reach
    (1, 4, 2, 16, 4, 9, None),  # a single query
    (1, 4, 2, 16, 4, 9, 3),
])
def test_prefill_attention_matches_torch(tr, Q, H, G, d, bs, C, window):
    q, k_cache, v_cache, blocks = _prefill_inputs(Q, H, G, d, bs, C)
    got = tr.m["prefill_attention"].prefill_attention(*tr.to(q, k_cache, v_cache, blocks), C, 0.125, window)
    close(got, attention.prefill_attention(q, k_cache, v_cache, blocks, C, 0.125, window), 1e-5)


def test_prefill_attention_reference_is_causal_attention():
    q, k_cache, v_cache, blocks = _prefill_inputs(6, 4, 2, 8, 4, 14)
    k, v = attention.gather_context(k_cache, blocks, 14), attention.gather_context(v_cache, blocks, 14)
    ref = attention.causal_attention(q, k, v, 0.3, 5)
    assert torch.equal(attention.prefill_attention(q, k_cache, v_cache, blocks, 14, 0.3, 5), ref)


def test_prefill_attention_bfloat16(tr):
    q, k_cache, v_cache, blocks = _prefill_inputs(18, 4, 2, 32, 16, 40, torch.bfloat16)
    got = tr.m["prefill_attention"].prefill_attention(*tr.to(q, k_cache, v_cache, blocks.int()), 40, 0.2)
    assert got.dtype == torch.bfloat16
    ref = attention.prefill_attention(q.float(), k_cache.float(), v_cache.float(), blocks, 40, 0.2)
    close(got, ref, 2e-2)


def _int8(*caches: torch.Tensor) -> list[torch.Tensor]:
    """Float caches [N, bs, G, d] -> int8 values then float32 scales [N, bs, G], for each cache in turn."""
    from swarm.runtime.block_pool import quantize_int8

    return [t for c in caches for t in quantize_int8(c)]


@pytest.mark.parametrize("B,H,G,d,bs,nb,lens,window", [
    (3, 6, 2, 64, 16, 2, [1, 17, 32], None),
    (2, 4, 4, 20, 4, 5, [3, 20], None),
    (2, 8, 1, 32, 4, 12, [5, 47], None),
    (2, 6, 3, 16, 8, 6, [40, 13], 10),
])
def test_decode_attention_int8_matches_torch(tr, B, H, G, d, bs, nb, lens, window):
    q, k_cache, v_cache, table, mask = _attention_inputs(B, H, G, d, bs, nb, lens, window)
    k, ks, v, vs = _int8(k_cache, v_cache)
    got = tr.m["decode_attention"].decode_attention(*tr.to(q, k, v, table, mask), 0.125, *tr.to(ks, vs))
    close(got, attention.decode_attention(q, k, v, table, mask, 0.125, ks, vs), 1e-5)
    with pytest.raises(UnsupportedInput, match="needs k_scale"):
        tr.m["decode_attention"].decode_attention(*tr.to(q, k, v, table, mask), 0.125)


@pytest.mark.parametrize("Q,H,G,d,bs,C,window", [
    (20, 6, 2, 64, 16, 20, None),
    (37, 4, 4, 20, 4, 70, None),
    (30, 6, 3, 16, 8, 95, 12),
    (1, 4, 2, 16, 4, 9, 3),
])
def test_prefill_attention_int8_matches_torch(tr, Q, H, G, d, bs, C, window):
    q, k_cache, v_cache, blocks = _prefill_inputs(Q, H, G, d, bs, C)
    k, ks, v, vs = _int8(k_cache, v_cache)
    got = tr.m["prefill_attention"].prefill_attention(*tr.to(q, k, v, blocks), C, 0.125, window, *tr.to(ks, vs))
    close(got, attention.prefill_attention(q, k, v, blocks, C, 0.125, window, ks, vs), 1e-5)


# -- LoRA ---------------------------------------------------------------------------------


def _lora_inputs(T=11, Din=40, Dout=70, S=3, R=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, Din, generator=g)
    a, b = torch.randn(S, R, Din, generator=g), torch.randn(S, Dout, R, generator=g)
    a[1, 2:] = 0  # slot 1 has rank 2, zero-padded to R
    return x, a, b, torch.tensor([0.5, 2.0, 1.0])


def test_lora_gather_matches_torch(tr):
    x, a, b, scale = _lora_inputs()
    slots = torch.tensor([0, -1, 2, 1, 1, 0, -1, 2, 2, 0, 1])
    got = tr.m["lora_gather"].lora_gather(*tr.to(x, a, b, slots, scale))
    close(got, lora.lora_gather(x, a, b, slots, scale), 1e-5)
    none = tr.m["lora_gather"].lora_gather(*tr.to(x, a, b, torch.full((11,), -1), scale))
    assert not none.any()


def test_lora_takes_half_activations(tr):
    """A bfloat16 engine's activations against its float32 adapter weights: float32 inside, bfloat16 out."""
    x, a, b, scale = _lora_inputs()
    xh, slots = x.bfloat16(), torch.tensor([0, -1, 2, 1, 1, 0, -1, 2, 2, 0, 1])
    want = lora.lora_gather(xh.float(), a, b, slots, scale)
    got = tr.m["lora_gather"].lora_gather(*tr.to(xh, a, b, slots, scale))
    assert got.dtype == torch.bfloat16
    close(got, want, 1e-2)
    starts, runs = [0, 3, 4, 4, 11], [1, -1, 0, 2]
    xd, ad, bd, sd = tr.to(xh, a, b, scale)
    got = tr.m["lora_segment"].lora_segment(xd, ad, bd, starts, runs, sd)
    assert got.dtype == torch.bfloat16
    close(got, lora.lora_segment(xh.float(), a, b, starts, runs, scale), 1e-2)


@pytest.mark.parametrize("starts,slots", [
    ([0, 3, 4, 4, 11], [1, -1, 0, 2]),  # an empty run
    ([0, 40, 45], [2, 0]),  # a run longer than one tile
    ([0, 45], [-1]),  # the base model only
])
def test_lora_segment_matches_torch(tr, starts, slots):
    x, a, b, scale = _lora_inputs(T=starts[-1])
    xd, ad, bd, sd = tr.to(x, a, b, scale)
    got = tr.m["lora_segment"].lora_segment(xd, ad, bd, starts, slots, sd)
    close(got, lora.lora_segment(x, a, b, starts, slots, scale), 1e-5)


# -- unsupported inputs fail loudly -------------------------------------------------------


def test_unsupported_inputs_raise(tr):
    Unsupported = UnsupportedInput
    m, dev = tr.m, tr.device
    route, ffn = m["moe_route"].route, m["moe_ffn"].expert_ffn
    with pytest.raises(Unsupported, match="dtype"):
        route(torch.randn(4, 8, dtype=torch.float64, device=dev), 2, "softmax_topk", True)
    with pytest.raises(Unsupported, match="top_k"):
        route(torch.randn(4, 8, device=dev), 9, "softmax_topk", True)
    with pytest.raises(Unsupported, match="experts"):
        route(torch.randn(2, 2048, device=dev), 2, "softmax_topk", True)
    x, gate_up, down, weights, ids = tr.to(*_moe_inputs(4, 16, 16, 4, 2, "even"))
    with pytest.raises(Unsupported, match="share a dtype"):
        ffn(x, gate_up.half(), down.half(), weights, ids)
    with pytest.raises(Unsupported, match="do not fit"):
        ffn(x, gate_up, down[:, :8], weights, ids)
    q, k_cache, v_cache, table, mask = tr.to(*_attention_inputs(2, 6, 4, 16, 4, 2, [3, 8]))
    attend = m["decode_attention"].decode_attention
    with pytest.raises(Unsupported, match="evenly"):
        attend(q, k_cache, v_cache, table, mask, 1.0)
    q, k_cache, v_cache, table, mask = tr.to(*_attention_inputs(2, 4, 2, 16, 4, 2, [3, 8]))
    with pytest.raises(Unsupported, match="mask"):
        attend(q, k_cache, v_cache, table, mask.int(), 1.0)
    with pytest.raises(Unsupported, match="mask must be"):
        attend(q, k_cache, v_cache, table, mask[:, :5], 1.0)
    q, k_cache, v_cache, blocks = tr.to(*_prefill_inputs(4, 4, 2, 16, 4, 10))
    prefill = m["prefill_attention"].prefill_attention
    with pytest.raises(Unsupported, match="dtype"):
        prefill(q.double(), k_cache.double(), v_cache.double(), blocks, 10, 1.0)
    with pytest.raises(Unsupported, match="share a dtype"):
        prefill(q, k_cache.half(), v_cache.half(), blocks, 10, 1.0)
    with pytest.raises(Unsupported, match="blocks"):
        prefill(q, k_cache, v_cache, blocks.float(), 10, 1.0)
    with pytest.raises(Unsupported, match="evenly"):
        prefill(q[:, :3], k_cache, v_cache, blocks, 10, 1.0)
    with pytest.raises(Unsupported, match="head dim"):
        prefill(q[..., :8], k_cache, v_cache, blocks, 10, 1.0)
    with pytest.raises(Unsupported, match="context_len"):
        prefill(q, k_cache, v_cache, blocks, 13, 1.0)  # 3 blocks of 4
    with pytest.raises(Unsupported, match="context_len"):
        prefill(q, k_cache, v_cache, blocks, 3, 1.0)  # fewer positions than queries
    with pytest.raises(Unsupported, match="block table"):
        prefill(q, k_cache, v_cache, blocks[None], 10, 1.0)
    with pytest.raises(Unsupported, match="window"):
        prefill(q, k_cache, v_cache, blocks, 10, 1.0, 0)
    x, a, b, scale = tr.to(*_lora_inputs())
    with pytest.raises(Unsupported, match="rank"):
        m["lora_gather"].lora_gather(x, a.new_zeros(3, 300, 40), b.new_zeros(3, 70, 300), x.new_zeros(11).long(),
                                     scale)
    with pytest.raises(Unsupported, match="slots"):
        m["lora_gather"].lora_gather(x, a, b, x.new_zeros(5).long(), scale)
    with pytest.raises(Unsupported, match="slots"):
        m["lora_segment"].lora_segment(x, a, b, [0, 11], [3], scale)
    with pytest.raises(Unsupported, match="share a dtype"):
        m["lora_segment"].lora_segment(x, a, b.half(), [0, 11], [0], scale)


def test_compiled_kernels_refuse_cpu_tensors():
    if INTERPRETED:
        pytest.skip("this process interprets triton")
    from swarm.kernels.triton.moe_route import route

    with pytest.raises(UnsupportedInput, match="needs CUDA tensors"):
        route(torch.randn(4, 8), 2, "softmax_topk", True)


def test_kernels_compile_for_a_gpu_without_one(monkeypatch):
    """ptxas ships with triton: compiling for sm_90 catches what the interpreter lets through
    (dot shapes, types, control flow) on machines without a GPU."""
    if INTERPRETED:
        pytest.skip("this process interprets triton")
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when the default is implicit
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from swarm.kernels.triton import decode_attention as da
    from swarm.kernels.triton import lora_gather as lg
    from swarm.kernels.triton import lora_segment as ls
    from swarm.kernels.triton import moe_ffn, moe_route
    from swarm.kernels.triton import prefill_attention as pa

    cases = [
        (moe_route._route_kernel, {"logits_ptr": "*bf16", "w_ptr": "*fp32", "ids_ptr": "*i64"},
         dict(K=2, KP=2, EP=8, BLOCK_T=64, SOFTMAX_FIRST=True, RENORMALIZE=True)),
        (moe_ffn._gate_up_kernel, {"x_ptr": "*fp32", "w_ptr": "*fp32", "h_ptr": "*fp32", "pairs_ptr": "*i32",
                                   "tile_expert_ptr": "*i32"},
         dict(K=2, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, PRECISION="tf32")),
        (moe_ffn._down_kernel, {"h_ptr": "*fp16", "w_ptr": "*fp16", "y_ptr": "*fp32", "rw_ptr": "*fp32",
                                "pairs_ptr": "*i32", "tile_expert_ptr": "*i32"},
         dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, PRECISION="ieee")),
        (da._partial_kernel, {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "table_ptr": "*i64",
                              "mask_ptr": "*i1", "o_ptr": "*fp32", "lse_ptr": "*fp32", "scale": "fp32"},
         dict(QG=1, QGP=1, BSP=16, DP=64, QUANT=False)),
        (da._partial_kernel, {"q_ptr": "*fp32", "k_ptr": "*i8", "v_ptr": "*i8", "ks_ptr": "*fp32", "vs_ptr": "*fp32",
                              "table_ptr": "*i64", "mask_ptr": "*i1", "o_ptr": "*fp32", "lse_ptr": "*fp32",
                              "scale": "fp32"},
         dict(QG=2, QGP=2, BSP=16, DP=64, QUANT=True)),
        (da._merge_kernel, {"o_ptr": "*fp32", "lse_ptr": "*fp32", "out_ptr": "*bf16"}, dict(SP=4, DP=64)),
        (pa._prefill_kernel, {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "table_ptr": "*i64",
                              "o_ptr": "*bf16", "scale": "fp32"},
         dict(QG=2, BLOCK_M=64, BLOCK_N=64, DP=64, PRECISION="ieee", DOT_F32=False, QUANT=False)),
        (pa._prefill_kernel, {"q_ptr": "*fp32", "k_ptr": "*i8", "v_ptr": "*i8", "ks_ptr": "*fp32", "vs_ptr": "*fp32",
                              "table_ptr": "*i64", "o_ptr": "*fp32", "scale": "fp32"},
         dict(QG=2, BLOCK_M=32, BLOCK_N=32, DP=64, PRECISION="tf32", DOT_F32=True, QUANT=True)),
        (pa._prefill_kernel, {"q_ptr": "*fp32", "k_ptr": "*fp32", "v_ptr": "*fp32", "table_ptr": "*i32",
                              "o_ptr": "*fp32", "scale": "fp32"},
         dict(QG=1, BLOCK_M=16, BLOCK_N=32, DP=128, PRECISION="tf32", DOT_F32=False, QUANT=False)),
        (lg._shrink_kernel, {"x_ptr": "*fp16", "a_ptr": "*fp32", "slots_ptr": "*i64", "scale_ptr": "*fp32",
                             "h_ptr": "*fp32"}, dict(RP=16, BLOCK_K=64)),
        (lg._expand_kernel, {"h_ptr": "*fp32", "b_ptr": "*fp32", "slots_ptr": "*i64", "out_ptr": "*fp16"},
         dict(RP=16, BLOCK_N=64)),
        (ls._shrink_kernel, {"x_ptr": "*fp32", "a_ptr": "*fp32", "tiles_ptr": "*i64", "scale_ptr": "*fp32",
                             "h_ptr": "*fp32"}, dict(RP=16, BLOCK_M=32, BLOCK_K=32, PRECISION="tf32")),
        (ls._expand_kernel, {"h_ptr": "*fp32", "b_ptr": "*fp32", "tiles_ptr": "*i64", "out_ptr": "*fp32"},
         dict(RP=16, BLOCK_M=32, BLOCK_N=64, PRECISION="tf32")),
    ]
    for fn, pointers, consts in cases:
        signature = {n: "constexpr" if n in consts else pointers.get(n, "i32") for n in fn.arg_names}
        triton.compile(ASTSource(fn, signature, consts), target=GPUTarget("cuda", 90, 32))


# -- registry -----------------------------------------------------------------------------


def test_registry_picks_native_or_torch_on_cpu_and_triton_on_cuda(monkeypatch):
    from swarm.kernels.native import ops as native

    monkeypatch.delenv(registry.ENV, raising=False)
    # native C kernels for the hot ops, torch's for the rest (tests/kernels/test_native.py checks them)
    assert registry.get("moe_expert_ffn", "cpu") is native.expert_ffn
    assert registry.get("decode_attention", torch.device("cpu")) is native.decode_attention
    assert registry.get("linear", "cpu") is native.linear
    assert registry.get("prefill_attention", "cpu") is native.prefill_attention
    assert registry.get("moe_route", "cpu") is native.route
    assert registry.get("argmax", "cpu") is native.argmax
    assert registry.get("lora_segment", "cpu") is lora.lora_segment
    assert registry.get("linear", "cuda") is F.linear  # cuBLAS
    assert registry.get("moe_route", "cuda").__module__ == "swarm.kernels.triton.moe_route"
    monkeypatch.setenv(registry.ENV, "torch")
    assert registry.get("moe_route", "cuda") is moe.route
    assert registry.get("moe_expert_ffn", "cpu") is moe.expert_ffn
    assert registry.get("decode_attention", "cpu") is attention.decode_attention
    assert registry.get("linear", "cpu") is F.linear
    assert set(registry.ops()) == {"linear", "rms_norm", "rotary", "moe_route", "moe_expert_ffn", "decode_attention",
                                   "prefill_attention", "argmax", "lora_gather", "lora_segment", "block_linear",
                                   "block_expert_ffn"}
    assert all(set(b) >= {"torch", "triton"} for b in registry.ops().values())


def test_registry_fails_loudly(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(registry.ENV, "triton")
    with pytest.raises(registry.KernelUnavailable, match="need a CUDA device"):
        registry.get("moe_route", "cpu")
    monkeypatch.setenv(registry.ENV, "cuda")
    with pytest.raises(registry.KernelUnavailable, match="not a kernel backend"):
        registry.get("moe_route", "cpu")
    monkeypatch.delenv(registry.ENV)
    with pytest.raises(registry.KernelUnavailable, match="unknown kernel"):
        registry.get("flash_mla", "cpu")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("only_torch", "torch", torch.add)
    with pytest.raises(registry.KernelUnavailable, match="no triton implementation"):
        registry.get("only_torch", "cuda")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        registry.register("x", "cuda", torch.add)


def test_model_and_kv_call_through_the_registry(monkeypatch, tmp_path):
    from swarm.runtime import Engine, SamplingParams
    from swarm.runtime.random_model import tiny_config, write_random_model

    calls = {"moe_expert_ffn": 0, "moe_route": 0, "decode_attention": 0, "prefill_attention": 0}

    def spy(name, fn):
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setenv(registry.ENV, "torch")
    for name in calls:
        registry.register(name, "torch", spy(name, registry.get(name, "cpu")))
    engine = Engine.from_pretrained(write_random_model(tmp_path, tiny_config(vocab_size=300)))
    engine.generate("The baker", SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    layers = engine.config.num_layers
    assert calls["moe_route"] == calls["moe_expert_ffn"] >= 3 * layers  # prefill + 2 decode steps
    assert calls["decode_attention"] >= 2 * layers
    assert calls["prefill_attention"] == layers  # one prompt, one chunk


def test_engine_on_triton_kernels_matches_torch(tr, monkeypatch, tmp_path):
    """The whole model on the triton backend (routing, expert FFN, decode and prefill attention): same logits
    and tokens."""
    from swarm.runtime import Engine, SamplingParams
    from swarm.runtime.random_model import tiny_config, write_random_model

    folder = write_random_model(tmp_path, tiny_config(vocab_size=300, num_experts=4))
    out = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv(registry.ENV, backend)
        engine = Engine.from_pretrained(folder, device=tr.device)
        ids = engine.tokenizer.encode("The baker sells bread")
        done = engine.generate([ids, ids[:2]], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
        out[backend] = engine.logits(ids), [c.token_ids for c in done]
    close(out["triton"][0], out["torch"][0], 1e-5)
    assert out["triton"][1] == out["torch"][1]
