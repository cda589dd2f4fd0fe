"""The torch CPU kernels against the naive loops they replace, and int8 against float32 decode.

    .venv/bin/python benchmarks/kernel_ops.py                 # full run (about 40 s on 2 CPU cores)
    .venv/bin/python benchmarks/kernel_ops.py --quick         # smoke run, tiny sizes
    .venv/bin/python benchmarks/kernel_ops.py --threads 1     # on a shared machine, one thread suffers least
    python benchmarks/kernel_ops.py --sections triton         # on a CUDA GPU: Triton against torch

Prints one JSON object on stdout (progress on stderr). Sections:

  hardware  memory bandwidth and matmul FLOP/s measured now (the limits to read the rest against)
  kernels   each torch kernel (MoE expert FFN, paged decode attention, LoRA gather and segment) against the
            per-token / per-expert / per-sequence Python loop it replaces, on the benchmark model's shapes
  native    the native C kernels (kernels/native, the CPU default) against the torch kernels they replace: MoE
            expert FFN at 1/32/512 tokens and paged decode attention at batch 1/32, each over `layers` copies of
            the weights or KV cache in turn, so every call reads them from DRAM as in a decode step
  int8      decode steps of the engine with float32 and weight-only int8 weights (random-weight Qwen3-MoE of
            benchmarks/engine.py) at batch 1 and 32, alternating timed blocks; one 512-token prefill chunk;
            logit error of each weight format against float32 on the bundled, trained swarm-tiny
  triton    (CUDA only, `--sections triton`) each Triton kernel against the torch implementation of the same op
            on the same GPU, and the MoE FFN against the per-expert loop; on the benchmark model's shapes and a
            larger MoE layer (hidden 2048, 128 experts top-8, 32 query heads of 128); median of CUDA-event
            timings (triton.testing.do_bench); achieved bandwidth against a device copy measured in the same run

Every section reports `machine`: CPU time other processes took while it ran; `disturbed` sections have
inflated times. Times are the best of several repetitions (the least disturbed).

Legend: T tokens, D hidden, E experts, K top-k, I expert width, B sequences, H query heads, G key/value heads,
d head dim, S slots, R rank.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from swarm.kernels import moe
from swarm.kernels.attention import decode_attention, gather_context
from swarm.kernels.lora import lora_gather, lora_segment
from swarm.kernels.moe import expert_ffn
from swarm.runtime import Engine, EngineConfig, SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the helpers sit beside it
import roofline  # noqa: E402
from engine import QUICK, MachineLoad, Sizes, ensure_model, git_revision, log, model_config  # noqa: E402

FIRST_ID = 5  # ids below are the tokenizer's special tokens
F32 = roofline.F32


def timed(fn: Callable[[], object], min_seconds: float = 0.2, repeats: int = 5) -> float:
    """Seconds per call: calls are batched so one timing lasts about min_seconds / repeats; best of `repeats`."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(min_seconds / repeats / once))
    return roofline.best_time(lambda: [fn() for _ in range(n)], repeats, warmup=0) / n


def compare(fast: Callable[[], torch.Tensor], loops: dict[str, Callable[[], torch.Tensor]], quick: bool) -> dict:
    budget = 0.05 if quick else 0.5
    out = fast()
    t_fast = timed(fast, budget)
    row: dict = {"kernel_ms": 1e3 * t_fast}
    for name, loop in loops.items():
        t = timed(loop, budget)
        row[f"{name}_ms"] = 1e3 * t
        row[f"speedup_vs_{name}"] = t / t_fast
        row[f"max_abs_diff_vs_{name}"] = (out - loop()).abs().max().item()
    return row


# -- naive loops (what the kernels replace) ---------------------------------------------------


def moe_per_token(x, gate_up, down, weights, ids):
    out = torch.zeros_like(x)
    for t in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            g, u = (gate_up[e] @ x[t]).chunk(2)
            out[t] += weights[t, j] * (down[e] @ (F.silu(g) * u))
    return out


def moe_per_expert(x, gate_up, down, weights, ids):
    """The transformers-style loop: every expert, the tokens routed to it picked by a mask."""
    out = torch.zeros_like(x)
    for e in range(gate_up.shape[0]):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        g, u = F.linear(x[tok], gate_up[e]).chunk(2, dim=-1)
        out.index_add_(0, tok, (F.linear(F.silu(g) * u, down[e]) * weights[tok, slot, None]).to(x.dtype))
    return out


def attention_per_sequence(q, k_cache, v_cache, tables, lens, scale):
    """One sequence at a time: gather its blocks, repeat K/V for the query heads, attend."""
    H, G = q.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    for b, (table, n) in enumerate(zip(tables, lens, strict=True)):
        k = gather_context(k_cache, table, n).repeat_interleave(H // G, dim=1).transpose(0, 1)  # [H, n, d]
        v = gather_context(v_cache, table, n).repeat_interleave(H // G, dim=1).transpose(0, 1)
        p = (q[b][:, None, :] @ k.transpose(1, 2) * scale).softmax(-1)  # [H, 1, n]
        out[b] = (p @ v)[:, 0]
    return out


def lora_per_token(x, a, b, slots, scale):
    out = x.new_zeros(x.shape[0], b.shape[1])
    for t, s in enumerate(slots):
        if s >= 0:
            out[t] = b[s] @ (a[s] @ x[t]) * scale[s]
    return out


# -- sections -------------------------------------------------------------------------------------


def _moe_row(g: torch.Generator, T: int, gate_up: torch.Tensor, down: torch.Tensor, K: int, quick: bool) -> dict:
    E, D = gate_up.shape[0], gate_up.shape[2]
    x = torch.randn(T, D, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    w = torch.rand(T, K, generator=g)
    loops = {"per_expert_loop": lambda: moe_per_expert(x, gate_up, down, w, ids)}
    if T <= 32:  # the per-token loop at 512 tokens takes seconds per call and says nothing new
        loops["per_token_loop"] = lambda: moe_per_token(x, gate_up, down, w, ids)
    return compare(lambda: expert_ffn(x, gate_up, down, w, ids), loops, quick)


def _attention_row(g: torch.Generator, B: int, context: int, H: int, G: int, d: int, bs: int, quick: bool) -> dict:
    nb = context // bs + 1
    lens = torch.randint(context // 2, context + 1, (B,), generator=g).tolist()
    N = B * nb + 1
    k_cache, v_cache = torch.randn(N, bs, G, d, generator=g), torch.randn(N, bs, G, d, generator=g)
    table = torch.randperm(N, generator=g)[: B * nb].view(B, nb)  # [B, nb] scattered blocks
    tables = [table[b, : -(-n // bs)] for b, n in enumerate(lens)]
    mask = torch.arange(nb * bs)[None, :] < torch.tensor(lens)[:, None]  # [B, S]
    q = torch.randn(B, H, d, generator=g)
    row = compare(lambda: decode_attention(q, k_cache, v_cache, table, mask, d**-0.5),
                  {"per_sequence_loop": lambda: attention_per_sequence(q, k_cache, v_cache, tables, lens, d**-0.5)},
                  quick)
    return row | {"mean_context": statistics.fmean(lens)}


def section_kernels(s: Sizes, quick: bool, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    D, I, E, K = s.hidden, s.expert_width, s.experts, s.top_k
    gate_up, down = torch.randn(E, 2 * I, D, generator=g) * 0.05, torch.randn(E, D, I, generator=g) * 0.05
    moe = {}
    for T in (1, 32) if quick else (1, 32, 512):
        log(f"kernels: MoE expert FFN, {T} tokens")
        moe[f"tokens_{T}"] = _moe_row(g, T, gate_up, down, K, quick)
    attn = {}
    H, G, d, bs = s.heads, s.kv_heads, s.head_dim, 16
    context = 64 if quick else 512
    for B in (1, 32):
        log(f"kernels: paged decode attention, {B} sequences of up to {context} tokens")
        attn[f"batch_{B}"] = _attention_row(g, B, context, H, G, d, bs, quick)

    # LoRA on the fused qkv projection: Din = D, Dout = q + 2 kv
    Din, Dout, S, R = D, (H + 2 * G) * d, 8, 16
    x = torch.randn(512, Din, generator=g)
    a, b = torch.randn(S, R, Din, generator=g) * 0.05, torch.randn(S, Dout, R, generator=g) * 0.05
    scale = torch.full((S,), 2.0)
    log("kernels: LoRA gather (32 decode tokens over 8 adapters + base) and segment (4 runs of 128 tokens)")
    slots = torch.randint(-1, S, (32,), generator=g)
    xs = x[:32]
    gather = compare(lambda: lora_gather(xs, a, b, slots, scale),
                     {"per_token_loop": lambda: lora_per_token(xs, a, b, slots.tolist(), scale)}, quick)
    starts, seg = [0, 128, 256, 384, 512], [0, 3, -1, 5]
    per_token = [sl for sl, lo, hi in zip(seg, starts, starts[1:], strict=False) for _ in range(lo, hi)]
    segment = compare(lambda: lora_segment(x, a, b, starts, seg, scale),
                      {"per_token_loop": lambda: lora_per_token(x, a, b, per_token, scale)}, quick)
    return {
        "moe_expert_ffn": moe, "decode_attention": attn,
        "lora_gather": {"tokens": 32, "slots": S, "rank": R, **gather},
        "lora_segment": {"tokens": 512, "runs": len(seg), "rank": R, **segment},
        "shapes": {"D": D, "I": I, "E": E, "K": K, "H": H, "G": G, "d": d, "block_size": bs,
                   "lora_in": Din, "lora_out": Dout},
    }


def _engine(folder: Path, quantize: str | None, batch: int, tokens: int) -> Engine:
    config = EngineConfig(kv_cache_tokens=batch * (tokens + 32), enable_prefix_cache=False)
    return Engine.from_pretrained(folder, config, quantize=quantize)


def _start_decoding(engine: Engine, prompts: list[list[int]], max_tokens: int) -> list:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    handles = [engine.submit(p, params) for p in prompts]
    while not all(h.token_ids for h in handles):
        engine.step()
    for _ in range(2):
        engine.step()
    return handles


def _decode_block(engine: Engine, batch: int, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        computed = engine.stats()["tokens_computed"]
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
        assert engine.stats()["tokens_computed"] - computed == batch, "a timed step was not decode-only"
    return times


ERROR_TEXT = ("The baker opened the shop at dawn. The guard walked past the market and greeted the smith, who was "
              "already at work by the forge.")


def logit_error() -> dict:
    """Each weight format's logits against float32's on the bundled, trained swarm-tiny (a random-weight model
    is too chaotic to tell formats apart: there, rounding a scale by 0.1% moves the mean error by a third), over
    every position of one English text."""
    f32 = Engine.from_pretrained("swarm-tiny")
    ids = f32.tokenizer.encode(ERROR_TEXT)
    ref = f32.logits(ids)
    out = {"model": "swarm-tiny", "positions": len(ids), "max_abs_logit": ref.abs().max().item()}
    for fmt in ("int8", "q8_0", "q4_0", "bf16"):
        logits = Engine.from_pretrained("swarm-tiny", quantize=fmt).logits(ids)
        diff = (logits - ref).abs()
        out[fmt] = {"max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
                    "top1_agreement": (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()}
    return out


def section_int8(folder: Path, s: Sizes, quick: bool, seed: int) -> dict:
    context, steps, blocks = (32, 4, 2) if quick else (512, 16, 3)
    rows = {}
    for batch in (1, 4) if quick else (1, 32):
        log(f"int8: decode at batch {batch}, context {context}, float32 and int8 alternating")
        gen = torch.Generator().manual_seed(seed + batch)
        prompts = [torch.randint(FIRST_ID, s.vocab, (context,), generator=gen).tolist() for _ in range(batch)]
        budget = steps * blocks + 8 + -(-batch * context // 512)  # decode tokens, warm-up, chunked prefill
        engines = {q: _engine(folder, q if q == "int8" else None, batch, context + budget) for q in ("float32", "int8")}
        for eng in engines.values():
            _start_decoding(eng, prompts, budget)
        runs: dict[str, list[list[float]]] = {q: [] for q in engines}
        for _ in range(blocks):  # alternate, so a burst of load on the machine hits both alike
            for q, eng in engines.items():
                runs[q].append(_decode_block(eng, batch, steps))
        row = {"batch": batch, "context": context, "steps_per_block": steps, "blocks": blocks}
        for q, blocks_ in runs.items():
            best = min(blocks_, key=sum)
            row[q] = {"step_ms": 1e3 * sum(best) / steps, "median_step_ms": 1e3 * statistics.median(best),
                      "block_mean_step_ms": [1e3 * sum(b) / steps for b in blocks_],
                      "tokens_per_s": batch * steps / sum(best),
                      "weights_mib": roofline.weight_bytes(engines[q].model) / 2**20}
        row["speedup"] = row["float32"]["step_ms"] / row["int8"]["step_ms"]
        rows[f"batch_{batch}"] = row
        del engines
    log("int8: one prefill chunk")
    gen = torch.Generator().manual_seed(seed + 2)
    chunk = torch.randint(FIRST_ID, s.vocab, (min(512, 4 * context),), generator=gen).tolist()
    prefill = {}
    for q in ("float32", "int8"):
        eng = _engine(folder, q if q == "int8" else None, 1, len(chunk))
        prefill[f"{q}_ms"] = 1e3 * roofline.best_time(lambda eng=eng: eng.logits(chunk), 2 if quick else 3)
    prefill["speedup"] = prefill["float32_ms"] / prefill["int8_ms"]
    log("int8: logit error")
    return {**rows, f"prefill_{len(chunk)}_tokens": prefill, "logit_error": logit_error(),
            "method": "weight-only int8, one float32 scale per output row (quantize='int8'): the native kernels "
                      "widen the integers to float32 in registers and scale each row's sum once (float32 "
                      "activations); prefill dequantises per call for torch's GEMM; router and shared-expert gate "
                      "stay float32"}


# -- Triton on a CUDA GPU -------------------------------------------------------------------------


def gpu_time(fn: Callable[[], object], quick: bool) -> float:
    """Median seconds per call, timed with CUDA events (triton.testing.do_bench; its budgets are ms)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=5 if quick else 25, rep=20 if quick else 100, return_mode="median") / 1e3


def gpu_limits(quick: bool) -> dict:
    """What this GPU reaches with plain torch now: device-to-device copy (bytes read + written) and matmuls."""
    n = (64 if quick else 1024) * 2**20 // F32
    src = torch.rand(n, device="cuda")
    dst = torch.empty_like(src)
    copy_s = gpu_time(lambda: dst.copy_(src), quick)
    out = {"copy_gbps": 2 * n * F32 / copy_s / 1e9, "copy_mib": n * F32 / 2**20}
    size = 1024 if quick else 8192
    for name, dtype, tf32 in (("float32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bfloat16", torch.bfloat16, False)):
        a, b = torch.randn(size, size, device="cuda", dtype=dtype), torch.randn(size, size, device="cuda", dtype=dtype)
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            out[f"matmul_{name}_tflops"] = 2 * size**3 / gpu_time(lambda a=a, b=b: a @ b, quick) / 1e12
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
    out["matmul_size"] = size
    out["device"] = torch.cuda.get_device_name()
    return out


def _vs_torch(fast: Callable[[], torch.Tensor], ref: Callable[[], torch.Tensor], quick: bool,
              extra: dict[str, Callable[[], torch.Tensor]] | None = None, bytes_moved: float | None = None,
              copy_gbps: float | None = None) -> dict:
    got, want = fast(), ref()
    t_fast, t_ref = gpu_time(fast, quick), gpu_time(ref, quick)
    row = {"triton_us": 1e6 * t_fast, "torch_us": 1e6 * t_ref, "speedup_vs_torch": t_ref / t_fast,
           "max_abs_diff_vs_torch": (got.float() - want.float()).abs().max().item(),
           "max_abs_ref": want.float().abs().max().item()}
    for name, fn in (extra or {}).items():
        t = gpu_time(fn, quick)
        row[f"{name}_us"] = 1e6 * t
        row[f"speedup_vs_{name}"] = t / t_fast
    if bytes_moved is not None:
        row["min_bytes"] = bytes_moved
        row["achieved_gbps"] = bytes_moved / t_fast / 1e9
        if copy_gbps:
            row["fraction_of_copy_bandwidth"] = row["achieved_gbps"] / copy_gbps
    return row


def _triton_moe(shape: dict, tokens: tuple[int, ...], dtype: torch.dtype, g: torch.Generator, quick: bool,
                copy_gbps: float) -> dict:
    from swarm.kernels.triton import moe_ffn, moe_route

    D, I, E, K = shape["D"], shape["I"], shape["E"], shape["K"]
    gate_up = (torch.randn(E, 2 * I, D, generator=g) * 0.05).to("cuda", dtype)
    down = (torch.randn(E, D, I, generator=g) * 0.05).to("cuda", dtype)
    size = gate_up.element_size()
    rows = {}
    for T in tokens:
        x = torch.randn(T, D, generator=g).to("cuda", dtype)
        logits = torch.randn(T, E, generator=g).cuda()
        w, ids = moe.route(logits, K, "softmax_topk", True)
        hit = int(ids.unique().numel())
        moved = hit * 3 * I * D * size + 2 * T * D * size  # the experts hit, read once; x in, y out
        rows[f"tokens_{T}"] = {
            "experts_hit": hit,
            "ffn": _vs_torch(lambda x=x, w=w, ids=ids: moe_ffn.expert_ffn(x, gate_up, down, w, ids),
                             lambda x=x, w=w, ids=ids: moe.expert_ffn(x, gate_up, down, w, ids), quick,
                             {"per_expert_loop": lambda x=x, w=w, ids=ids: moe_per_expert(x, gate_up, down, w, ids)}
                             if T >= 32 else None, moved, copy_gbps),
            "route": _vs_torch(lambda lg=logits: moe_route.route(lg, K, "softmax_topk", True)[0],
                               lambda lg=logits: moe.route(lg, K, "softmax_topk", True)[0], quick),
        }
    return rows


def _triton_attention(shape: dict, g: torch.Generator, quick: bool, copy_gbps: float) -> dict:
    from swarm.kernels.attention import prefill_attention
    from swarm.kernels.triton import decode_attention as tda
    from swarm.kernels.triton import prefill_attention as tpa

    H, G, d, bs = shape["H"], shape["G"], shape["d"], 16
    rows = {}
    for B, context in ((1, 512), (32, 512), (32, 2048)) if not quick else ((1, 64), (8, 64)):
        nb = context // bs
        N = B * nb + 1
        k_cache, v_cache = (torch.randn(N, bs, G, d, generator=g).cuda() for _ in range(2))
        table = torch.randperm(N, generator=g)[: B * nb].view(B, nb).cuda()
        mask = torch.ones(B, nb * bs, dtype=torch.bool, device="cuda")
        q = torch.randn(B, H, d, generator=g).cuda()
        moved = 2 * B * context * G * d * F32 + 2 * q.numel() * F32
        rows[f"decode_batch_{B}_context_{context}"] = _vs_torch(
            lambda q=q, k=k_cache, v=v_cache, t=table, m=mask: tda.decode_attention(q, k, v, t, m, d**-0.5),
            lambda q=q, k=k_cache, v=v_cache, t=table, m=mask: decode_attention(q, k, v, t, m, d**-0.5),
            quick, None, moved, copy_gbps)
    for Q, context in ((512, 512), (512, 2048)) if not quick else ((32, 64),):
        nb = context // bs
        k_cache, v_cache = (torch.randn(nb + 3, bs, G, d, generator=g).cuda() for _ in range(2))
        blocks = torch.randperm(nb + 3, generator=g)[:nb].cuda()
        q = torch.randn(Q, H, d, generator=g).cuda()
        rows[f"prefill_{Q}_over_context_{context}"] = _vs_torch(
            lambda q=q, k=k_cache, v=v_cache, b=blocks, c=context: tpa.prefill_attention(q, k, v, b, c, d**-0.5),
            lambda q=q, k=k_cache, v=v_cache, b=blocks, c=context: prefill_attention(q, k, v, b, c, d**-0.5), quick)
    return rows


def _triton_lora(shape: dict, g: torch.Generator, quick: bool) -> dict:
    from swarm.kernels.triton import lora_gather as tlg
    from swarm.kernels.triton import lora_segment as tls

    Din, Dout, S, R = shape["D"], (shape["H"] + 2 * shape["G"]) * shape["d"], 8, 16
    a = (torch.randn(S, R, Din, generator=g) * 0.05).cuda()
    b = (torch.randn(S, Dout, R, generator=g) * 0.05).cuda()
    scale = torch.full((S,), 2.0, device="cuda")
    x = torch.randn(512, Din, generator=g).cuda()
    slots = torch.randint(-1, S, (32,), generator=g).cuda()
    xs = x[:32].contiguous()
    starts, seg = [0, 128, 256, 384, 512], [0, 3, -1, 5]
    return {
        "gather_32_tokens_8_adapters": _vs_torch(lambda: tlg.lora_gather(xs, a, b, slots, scale),
                                                 lambda: lora_gather(xs, a, b, slots, scale), quick),
        "segment_512_tokens_4_runs": _vs_torch(lambda: tls.lora_segment(x, a, b, starts, seg, scale),
                                               lambda: lora_segment(x, a, b, starts, seg, scale), quick),
        "shape": {"in": Din, "out": Dout, "adapters": S, "rank": R},
    }


def section_triton(s: Sizes, quick: bool, seed: int) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("--sections triton needs a CUDA GPU (torch.cuda.is_available() is False here)")
    g = torch.Generator().manual_seed(seed)
    log("triton: GPU limits (device copy, matmuls)")
    limits = gpu_limits(quick)
    small = {"D": s.hidden, "I": s.expert_width, "E": s.experts, "K": s.top_k, "H": s.heads, "G": s.kv_heads,
             "d": s.head_dim}
    large = small if quick else {"D": 2048, "I": 768, "E": 128, "K": 8, "H": 32, "G": 4, "d": 128}
    tokens = (1, 32) if quick else (1, 32, 512, 4096)
    out: dict = {"limits": limits, "precision": "float32 tensors, fp32 dots (ieee: TF32 is off, as in torch's default)"}
    for name, shape in (("benchmark_model", small), ("large_moe_layer", large)):
        log(f"triton: {name} {shape}")
        out[name] = {
            "shape": shape,
            "moe_float32": _triton_moe(shape, tokens, torch.float32, g, quick, limits["copy_gbps"]),
            "moe_bfloat16": _triton_moe(shape, tokens, torch.bfloat16, g, quick, limits["copy_gbps"]),
            "attention": _triton_attention(shape, g, quick, limits["copy_gbps"]),
            "lora": _triton_lora(shape, g, quick),
        }
        if quick:
            break
    return out


def _per_layer(row: dict, layers: int) -> dict:
    """compare() timed all layers per call: times per layer, the fast one named native."""
    return {k.replace("kernel_", "native_"): v / layers if k.endswith("_ms") else v for k, v in row.items()}


def _native_moe_row(g: torch.Generator, T: int, layers: list, K: int, quick: bool) -> dict:
    from swarm.kernels.native import ops as native

    E, _, D = layers[0][0].shape
    x = torch.randn(T, D, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    w = torch.rand(T, K, generator=g)
    row = _per_layer(compare(lambda: torch.stack([native.expert_ffn(x, gu, dn, w, ids) for gu, dn in layers]),
                             {"torch": lambda: torch.stack([expert_ffn(x, gu, dn, w, ids) for gu, dn in layers])},
                             quick), len(layers))
    return row | {"gflops": 3 * 2 * T * K * D * layers[0][1].shape[2] / row["native_ms"] / 1e6}


def _native_attention_row(g: torch.Generator, B: int, context: int, s: Sizes, quick: bool) -> dict:
    from swarm.kernels.native import ops as native

    H, G, d, bs = s.heads, s.kv_heads, s.head_dim, 16
    nb = context // bs + 1
    lens = torch.randint(context // 2, context + 1, (B,), generator=g)
    N = B * nb + 1
    caches = [(torch.randn(N, bs, G, d, generator=g), torch.randn(N, bs, G, d, generator=g))
              for _ in range(s.layers)]
    table = torch.randperm(N, generator=g)[: B * nb].view(B, nb)  # [B, nb] scattered blocks
    mask = torch.arange(nb * bs)[None, :] < lens[:, None]  # [B, S]
    q = torch.randn(B, H, d, generator=g)
    attend = lambda fn: torch.stack([fn(q, kc, vc, table, mask, d**-0.5) for kc, vc in caches])
    row = _per_layer(compare(lambda: attend(native.decode_attention), {"torch": lambda: attend(decode_attention)},
                             quick), s.layers)
    kv_bytes = 2 * int(lens.sum()) * G * d * 4
    return row | {"mean_context": lens.float().mean().item(), "kv_gbps": kv_bytes / row["native_ms"] / 1e6}


def _native_linear_row(g: torch.Generator, rows: int, weights: list[torch.Tensor], quick: bool) -> dict:
    from swarm.kernels.native import ops as native

    x = torch.randn(rows, weights[0].shape[1], generator=g)
    row = _per_layer(compare(lambda: torch.stack([native.linear(x, w) for w in weights]),
                             {"torch": lambda: torch.stack([F.linear(x, w) for w in weights])}, quick), len(weights))
    return row | {"gflops": 2 * rows * weights[0].numel() / row["native_ms"] / 1e6}


def _native_prefill_row(g: torch.Generator, chunk: int, context: int, s: Sizes, quick: bool) -> dict:
    from swarm.kernels.attention import prefill_attention
    from swarm.kernels.native import ops as native

    H, G, d, bs = s.heads, s.kv_heads, s.head_dim, 16
    nb = -(-context // bs)
    caches = [(torch.randn(nb + 1, bs, G, d, generator=g), torch.randn(nb + 1, bs, G, d, generator=g))
              for _ in range(s.layers)]
    blocks = torch.randperm(nb + 1, generator=g)[:nb]
    q = torch.randn(chunk, H, d, generator=g)
    attend = lambda fn: torch.stack([fn(q, kc, vc, blocks, context, d**-0.5) for kc, vc in caches])
    row = _per_layer(compare(lambda: attend(native.prefill_attention), {"torch": lambda: attend(prefill_attention)},
                             quick), s.layers)
    visible = sum(context - chunk + i + 1 for i in range(chunk))  # causal: query i sees this many keys
    return row | {"gflops": 4 * H * d * visible / row["native_ms"] / 1e6}


def section_native(s: Sizes, quick: bool, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    D, I, E, L = s.hidden, s.expert_width, s.experts, s.layers
    layers = [(torch.randn(E, 2 * I, D, generator=g) * 0.05, torch.randn(E, D, I, generator=g) * 0.05)
              for _ in range(L)]
    moe = {}
    for T in (1, 32) if quick else (1, 32, 512):
        log(f"native: MoE expert FFN, {T} tokens, {L} layers' weights in turn")
        moe[f"tokens_{T}"] = _native_moe_row(g, T, layers, s.top_k, quick)
    attn = {}
    context = 64 if quick else 512
    for B in (1, 32):
        log(f"native: paged decode attention, {B} sequences of up to {context} tokens, {L} layers' caches in turn")
        attn[f"batch_{B}"] = _native_attention_row(g, B, context, s, quick)
    prefill = {}
    for chunk, context in ((32, 64), (64, 64)) if quick else ((32, 640), (288, 544), (512, 512)):
        log(f"native: paged prefill attention, a {chunk}-token chunk ending at position {context}")
        prefill[f"chunk_{chunk}_of_{context}"] = _native_prefill_row(g, chunk, context, s, quick)
    dense = {}
    shapes = {"qkv": ((s.heads + 2 * s.kv_heads) * s.head_dim, D), "lm_head": (s.vocab, D)}
    for name, (n, k) in shapes.items():
        weights = [torch.randn(n, k, generator=g) * 0.05 for _ in range(L if name == "qkv" else 1)]
        for rows in (1, 32):
            log(f"native: linear {name} [{n}, {k}], {rows} rows")
            dense[f"{name}_rows_{rows}"] = _native_linear_row(g, rows, weights, quick)
    return {"moe_expert_ffn": moe, "decode_attention": attn, "prefill_attention": prefill, "linear": dense,
            "layers": L, "note": "times per layer (per call for lm_head); each call goes through every layer's "
                                 "weights or cache, as a step does"}


SECTIONS = ("hardware", "kernels", "native", "int8", "triton")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    p.add_argument("--sections", default="hardware,kernels,native,int8",
                   help="comma-separated: hardware, kernels, native, int8, triton (CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", type=Path, default=None, help="keep (or reuse) the random checkpoint here")
    p.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}")
    s = QUICK if args.quick else Sizes()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    started = time.perf_counter()
    result: dict = {"config": {"quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "cpu_count": os.cpu_count(), "git": git_revision(), "seed": args.seed,
                               "model": {"hidden": s.hidden, "layers": s.layers, "heads": s.heads,
                                         "head_dim": s.head_dim, "kv_heads": s.kv_heads, "experts": s.experts,
                                         "top_k": s.top_k, "expert_width": s.expert_width, "vocab": s.vocab}}}
    with tempfile.TemporaryDirectory(prefix="swarm-kernels-") as tmp:
        folder = None
        if "int8" in sections:
            folder = ensure_model(args.model_dir or Path(tmp) / "model", model_config(s))
        runners = {
            "hardware": lambda: roofline.measure(args.quick),
            "kernels": lambda: section_kernels(s, args.quick, args.seed),
            "native": lambda: section_native(s, args.quick, args.seed),
            "int8": lambda: section_int8(folder, s, args.quick, args.seed),
            "triton": lambda: section_triton(s, args.quick, args.seed),
        }
        for name in SECTIONS:
            if name in sections:
                load = MachineLoad()
                result[name] = runners[name]()
                result[name]["machine"] = load.report()
                log(f"{name} done in {result[name]['machine']['wall_s']:.1f}s"
                    + (" (DISTURBED: other processes used the CPU)" if result[name]["machine"]["disturbed"] else ""))
    result["disturbed_sections"] = [n for n in SECTIONS if n in result and result[n]["machine"]["disturbed"]]
    result["total_seconds"] = time.perf_counter() - started
    return roofline.emit(result, args.output)


if __name__ == "__main__":
    main()
