"""Hardware limits measured on the spot, and the bytes and FLOPs a decode step cannot avoid.

The limits are what this machine reaches with plain torch ops right now (not
datasheet peaks), so "fraction of the limit" says how far our code is from
what torch itself could do here. The cost model counts the minimum traffic of
one decode step: every weight the step uses read once, the KV cache read once,
nothing re-read and no temporaries.

Legend: B sequences in the step, D hidden, H query heads, G key/value heads,
d head dim, E experts, K top-k, I expert width, V vocabulary, L layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from swarm.runtime.config import ModelConfig

F32 = 4  # bytes per float32


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Fastest of `repeats` timed calls: the minimum is the least disturbed by other work. On a GPU each
    call is followed by a synchronize, so the time is the device's work, not its launch."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def memory_bandwidth(mib: int = 512, repeats: int = 5, device: torch.device | str = "cpu") -> dict:
    """GB/s of a large read (sum) and a large copy (read + write), best of `repeats`.

    The tensors are far bigger than the last-level cache, so this is DRAM, not cache.
    """
    n = mib * 2**20 // F32
    src = torch.rand(n, device=device)  # [n]
    dst = torch.empty_like(src)
    read_s = best_time(lambda: src.sum(), repeats, device=device)
    copy_s = best_time(lambda: dst.copy_(src), repeats, device=device)
    read = n * F32 / read_s / 1e9
    copy = 2 * n * F32 / copy_s / 1e9
    return {"read_gbps": read, "copy_gbps": copy, "bandwidth_gbps": max(read, copy), "tensor_mib": mib}


def matmul_flops(size: int = 2048, repeats: int = 5, device: torch.device | str = "cpu") -> dict:
    """float32 GFLOP/s of one [size, size] @ [size, size] matmul, best of `repeats` (no TF32 on a GPU,
    as the engine's float32 weights run)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    s = best_time(lambda: torch.mm(a, b, out=out), repeats, device=device)
    return {"matmul_gflops": 2 * size**3 / s / 1e9, "matmul_size": size}


def measure(quick: bool = False, device: torch.device | str = "cpu") -> dict:
    """The limits the roofline section divides by, plus the thread count they were measured with."""
    gpu = torch.device(device).type == "cuda"
    bw = memory_bandwidth(mib=(128 if quick else 512) * (8 if gpu else 1), repeats=3 if quick else 8, device=device)
    mm = matmul_flops(size=(1024 if quick else 2048) * (4 if gpu else 1), repeats=3 if quick else 10, device=device)
    return {**bw, **mm, "torch_threads": torch.get_num_threads(), "device": str(device)}


@dataclass(frozen=True)
class StepCost:
    bytes: float
    flops: float

    def fraction(self, seconds: float, bandwidth_gbps: float, gflops: float) -> dict:
        """Achieved rates and the share of the machine's limit (the roofline: whichever bound is nearer)."""
        gbps, gfs = self.bytes / seconds / 1e9, self.flops / seconds / 1e9
        bw_frac, fl_frac = gbps / bandwidth_gbps, gfs / gflops
        return {
            "achieved_gbps": gbps, "achieved_gflops": gfs,
            "bandwidth_fraction": bw_frac, "compute_fraction": fl_frac,
            "fraction_of_limit": max(bw_frac, fl_frac),
            "bound": "memory" if bw_frac >= fl_frac else "compute",
            "ideal_step_ms": max(self.bytes / bandwidth_gbps / 1e9, self.flops / gflops / 1e9) * 1e3,
        }


def _attention_params(cfg: ModelConfig) -> int:
    D = cfg.hidden_size
    # fused qkv [q + 2kv, D], o_proj [D, q], two RMSNorms, optional per-head q/k norms
    return (cfg.q_size + 2 * cfg.kv_size) * D + cfg.q_size * D + 2 * D + 2 * cfg.head_dim


def decode_step_cost(cfg: ModelConfig, context_lens: Sequence[int], experts_hit: Sequence[int]) -> StepCost:
    """Minimum bytes and FLOPs of one decode step: one new token per sequence.

    `context_lens` are the sequences' lengths including the new token; `experts_hit`
    is, per MoE layer in order, how many distinct experts the step's tokens used.
    Only MoE layers are modelled (every layer of the Qwen3-MoE benchmark model).
    """
    B, L, D = len(context_lens), cfg.num_layers, cfg.hidden_size
    assert len(experts_hit) == L, "one expert count per layer"
    per_expert = 3 * cfg.moe_intermediate_size * D  # gate, up [I, D] and down [D, I]
    attn, router = _attention_params(cfg), cfg.num_experts * D
    weights = L * (attn + router) + sum(experts_hit) * per_expert + cfg.vocab_size * D + D  # + lm_head, final norm
    embed_rows = B * D
    kv_read = sum(context_lens) * L * 2 * cfg.kv_size  # K and V, every layer, every past token
    kv_write = B * L * 2 * cfg.kv_size
    activations = B * L * 4 * D  # a few [B, D] rows in and out per layer: small next to the rest
    nbytes = F32 * (weights + embed_rows + kv_read + kv_write + activations)
    # matmul FLOPs per token: 2 x used weights; each token uses K experts, not all that the batch hit
    dense_per_token = L * (attn + router) + L * cfg.top_k * per_expert + cfg.vocab_size * D
    attn_flops = sum(2 * 2 * cfg.num_heads * cfg.head_dim * c for c in context_lens) * L  # QK^T and PV
    return StepCost(bytes=float(nbytes), flops=float(2 * B * dense_per_token + attn_flops))


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def fill_sizes(args, full: dict, quick: dict) -> None:
    """Give each size flag left unset (None) its value: `quick`'s with --quick, else `full`'s."""
    for key, value in full.items():
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, value) if args.quick else value)


def emit(result: dict, output=None) -> dict:
    """Print the benchmark's JSON object (and write it to `output`, a Path, when given)."""
    import json

    text = json.dumps(result, indent=2, default=float)
    if output:
        output.write_text(text + "\n")
    print(text)
    return result
