"""Many LoRA adapters in one batch against the same batch on the base model.

    .venv/bin/python benchmarks/lora.py            # 32 requests over 8 adapters, rank 16, q/k/v/o
    .venv/bin/python benchmarks/lora.py --quick    # tiny sizes, seconds

Writes a random-weight Qwen3-MoE (the shape of benchmarks/engine.py) and
PEFT-format adapters with random weights, then serves the same 32 prompts
twice per repetition: all on the base model, and spread over the adapters
(4 requests each), alternating to share any disturbance. Prints one JSON
object with the hardware limits measured in the same run. Target: the
adapter batch is at most 20% slower.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402


def write_adapter(folder: Path, cfg: dict, rank: int, seed: int, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    """A PEFT LoRA folder with random A and B for `targets` in every layer."""
    g = torch.Generator().manual_seed(seed)
    D, heads, kv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    shapes = {"q_proj": (D, heads * hd), "k_proj": (D, kv * hd), "v_proj": (D, kv * hd), "o_proj": (heads * hd, D)}
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for t in targets:
            fan_in, fan_out = shapes[t]
            key = f"base_model.model.model.layers.{layer}.self_attn.{t}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) * 0.05
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 0.05
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(targets), "bias": "none"}))
    return folder


def serve(engine: Engine, prompts, adapters, new_tokens: int) -> float:
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params, adapter=adapters)
    seconds = time.perf_counter() - t0
    assert all(len(o.token_ids) == new_tokens for o in outs)
    return seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.requests, args.adapters, args.prompt, args.new_tokens, args.reps = 8, 4, 32, 8, 1
        cfg = tiny_config("qwen3_moe", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    else:
        cfg = tiny_config("qwen3_moe", vocab_size=8192, hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2,
                          num_experts=8, top_k=2, intermediate_size=768)
        cfg["head_dim"] = 64
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    tmp = Path(tempfile.mkdtemp(prefix="swarm-lora-bench-"))
    model = write_random_model(tmp / "model", cfg)
    engine = Engine.from_pretrained(model, config=EngineConfig(max_adapters=args.adapters, max_lora_rank=args.rank,
                                                               enable_prefix_cache=False))
    names = [f"persona{i}" for i in range(args.adapters)]
    for i, name in enumerate(names):
        engine.add_adapter(name, write_adapter(tmp / name, cfg, args.rank, seed=i))
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, cfg["vocab_size"], (args.prompt,), generator=g).tolist() for _ in range(args.requests)]
    spread = [names[i % len(names)] for i in range(args.requests)]
    serve(engine, prompts[:2], [None, names[0]], 2)  # warm up both paths
    base_s, lora_s = [], []
    for _ in range(args.reps):  # alternate, so both see the same machine
        base_s.append(serve(engine, prompts, None, args.new_tokens))
        lora_s.append(serve(engine, prompts, spread, args.new_tokens))
    tokens = args.requests * args.new_tokens
    base, lora = min(base_s), min(lora_s)
    slowdown = 1 - base / lora
    result = {
        "hardware": {**roofline.memory_bandwidth(), **roofline.matmul_flops(), "torch_threads": args.threads},
        "workload": {"requests": args.requests, "adapters": args.adapters, "rank": args.rank,
                     "targets": "q_proj,k_proj,v_proj,o_proj", "prompt_tokens": args.prompt,
                     "new_tokens": args.new_tokens, "repetitions": args.reps, "prefix_cache": False,
                     "model": {k: cfg[k] for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")}},
        "base": {"seconds_best": base, "tokens_per_s": tokens / base, "seconds_all": base_s},
        "adapters": {"seconds_best": lora, "tokens_per_s": tokens / lora, "seconds_all": lora_s},
        "throughput_lora_over_base": base / lora,
        "slowdown": slowdown,
        "target": "adapter batch at most 20% lower throughput than the base batch",
        "meets_target": slowdown <= 0.20,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
