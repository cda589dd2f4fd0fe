"""The `swarm` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from swarm.runtime.errors import SwarmError


def _generate(args: argparse.Namespace) -> int:
    from swarm.runtime import Engine, SamplingParams

    t0 = time.perf_counter()
    engine = Engine.from_pretrained(args.model)
    adapter = None
    if args.adapter:
        adapter = Path(args.adapter).name
        engine.add_adapter(adapter, args.adapter)
    t1 = time.perf_counter()
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    [out] = engine.generate([args.prompt], params, adapter=adapter)
    t2 = time.perf_counter()
    print(args.prompt + out.text)
    cfg = engine.config
    print(
        f"[{cfg.model_type}, {cfg.num_layers} layers, {cfg.num_experts or 1} experts | "
        f"loaded in {t1 - t0:.2f}s | {len(out.prompt_token_ids)} prompt + {len(out.token_ids)} new tokens "
        f"in {t2 - t1:.2f}s ({len(out.token_ids) / max(t2 - t1, 1e-9):.1f} tok/s) | finish: {out.finish_reason}]",
        file=sys.stderr,
    )
    return 0


def _random_model(args: argparse.Namespace) -> int:
    from swarm.runtime.random_model import tiny_config, write_random_model

    cfg = tiny_config(args.family, vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                      num_experts=args.experts, top_k=args.top_k)
    path = write_random_model(args.out, cfg, seed=args.seed)
    print(f"wrote a random {args.family} model to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="Multi-agent simulation on small language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="complete a prompt with a model")
    g.add_argument("prompt")
    g.add_argument("--model", required=True, help="a local Hugging Face model folder")
    g.add_argument("--max-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--adapter", help="a PEFT LoRA adapter folder to generate with")
    g.set_defaults(func=_generate)

    r = sub.add_parser("random-model", help="write a small random-weight model folder (for trying the runtime)")
    r.add_argument("out")
    r.add_argument("--family", default="qwen3_moe",
                   choices=["llama", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"])
    r.add_argument("--vocab", type=int, default=512)
    r.add_argument("--hidden", type=int, default=64)
    r.add_argument("--layers", type=int, default=2)
    r.add_argument("--experts", type=int, default=4)
    r.add_argument("--top-k", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_random_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SwarmError, ValueError) as e:
        print(f"swarm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
