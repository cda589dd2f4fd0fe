"""Constrained against unconstrained decoding, side by side, on the random-weight Qwen3-MoE of engine.py.

    .venv/bin/python benchmarks/grammar.py            # full run (a few minutes on 2 CPU cores)
    .venv/bin/python benchmarks/grammar.py --quick    # smoke run, tiny model

Prints one JSON object on stdout (progress goes to stderr). For each batch size,
requests decode an agent action (a tagged union of msgspec Structs with Literal
fields, a bounded string and a bounded integer) at temperature 1.0. The
unconstrained run then decodes the same prompts with the same seeds for exactly
as many tokens as each constrained request produced, so both runs take the same
steps with the same batch shapes; only the grammar work differs. Decode time is
measured after every request of a round has its first token (prefill excluded),
rounds alternate between the two modes, and the best of the repetitions is
compared. `mask_share` is the part of constrained decode time spent computing
and applying masks (`Engine._mask_grammars`); consuming tokens is in the rest.
`closing_share` is the part spent keeping each request's closing path, so its
value completes within max_tokens (`Budget._path_after` in runtime/closing.py:
checking the held path after a token that left it, or finding a new one);
`closing_cpu_us_per_token` is the same work in CPU time of the engine's thread
per decoded token, which other processes on a shared machine barely change.

The `batch_*` rows never come near max_tokens (the common case). The
`near_budget_batch_*` rows decode a union whose say-action has a string of
any length under a max_tokens the model's rambling exceeds, so most requests
spend their last steps on the closing path and end closed by the budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Literal

import llguidance
import msgspec
import torch

from swarm.runtime import Engine, SamplingParams
from swarm.runtime.closing import Budget
from swarm.runtime.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the helpers sit beside it
import engine as engine_bench  # noqa: E402
import roofline  # noqa: E402

PLAYERS = ("Mira", "Tomas", "Zoe", "Ada", "Bram", "Odile", "Pim", "Quinn", "Rhea", "Sten", "Tove", "Ulla")
PLACES = ("tavern", "square", "mill", "market", "bridge", "well")


class Vote(msgspec.Struct, tag="vote"):
    target: Literal[PLAYERS]


class Say(msgspec.Struct, tag="say"):
    to: Literal[PLAYERS]
    text: Annotated[str, msgspec.Meta(max_length=48)]


class Move(msgspec.Struct, tag="move"):
    place: Literal[PLACES]
    minutes: Annotated[int, msgspec.Meta(ge=0, le=120)]


Action = Vote | Say | Move


class Ramble(msgspec.Struct, tag="say"):
    to: Literal[PLAYERS]
    text: str  # no bound: a random model writes until its budget is spent


NearBudgetAction = Vote | Ramble | Move


@dataclass(frozen=True)
class Sizes:
    batches: tuple[int, ...] = (1, 32)
    prompt: int = 64  # prompt tokens per request
    rounds_total: int = 32  # requests per mode and repetition, split into rounds of one batch each
    reps: int = 3
    max_tokens: int = 256  # never reached by the schema above; the value always completes first
    near_budget_tokens: int = 48  # max_tokens of the near-budget rows: most say-actions are closed by it


QUICK = Sizes(batches=(1, 4), prompt=16, rounds_total=4, reps=2)
QUICK_MODEL = engine_bench.QUICK


def log(msg: str) -> None:
    engine_bench.log(msg)


class ClassTimed:
    """Adds up the seconds (wall and this thread's CPU) and calls of a method of every instance of a
    class, inside a `with` block."""

    def __init__(self, cls: type, name: str):
        self.cls, self.name, self.seconds, self.cpu_seconds, self.calls = cls, name, 0.0, 0.0, 0

    def __enter__(self) -> ClassTimed:
        self._original = fn = self.cls.__dict__[self.name]

        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.cpu_seconds += time.thread_time() - c0
                self.calls += 1

        setattr(self.cls, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.cls, self.name, self._original)


def decode_round(engine: Engine, prompts: list[list[int]], params: list[SamplingParams], schema) -> dict:
    """Run one batch to completion; time only the steps after every request has its first token."""
    handles = [engine.submit(p, sp, schema=schema) for p, sp in zip(prompts, params, strict=True)]
    while not all(h.token_ids or h.done for h in handles):
        engine.step()
    first = sum(len(h.token_ids) for h in handles)
    masks = engine_bench.Timed(engine, "_mask_grammars")
    steps, t0 = 0, time.perf_counter()
    with ClassTimed(Budget, "_path_after") as closing:
        while not all(h.done for h in handles):
            engine.step()
            steps += 1
    seconds = time.perf_counter() - t0
    del engine._mask_grammars  # drop the instance wrapper: the class method again
    outs = [h.result() for h in handles]
    return {"seconds": seconds, "tokens": sum(len(o.token_ids) for o in outs) - first, "steps": steps,
            "mask_seconds": masks.seconds, "closing_seconds": closing.seconds, "closing_calls": closing.calls,
            "closing_cpu_seconds": closing.cpu_seconds, "outs": outs}


def round_params(seeds: list[int], lengths: list[int] | None, max_tokens: int) -> list[SamplingParams]:
    """Constrained: up to max_tokens. Unconstrained: exactly the constrained lengths."""
    if lengths is None:
        return [SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=x) for x in seeds]
    return [SamplingParams(max_tokens=n, temperature=1.0, seed=x, ignore_eos=True)
            for n, x in zip(lengths, seeds, strict=True)]


def measure_batch(b: engine_bench.Bench, s: Sizes, batch: int, schema=Action, max_tokens: int | None = None) -> dict:
    max_tokens = max_tokens or s.max_tokens
    n_rounds = max(1, s.rounds_total // batch)
    gen = torch.Generator().manual_seed(b.seed + batch)
    rounds = [[engine_bench.random_ids(gen, s.prompt, b.s.vocab) for _ in range(batch)] for _ in range(n_rounds)]
    seeds = [[1000 * r + i for i in range(batch)] for r in range(n_rounds)]
    engine = b.engine(kv_cache_tokens=batch * (s.prompt + s.max_tokens + 32), enable_prefix_cache=False)
    log(f"batch {batch}: warm-up (compiles the schema once)")
    decode_round(engine, rounds[0], round_params(seeds[0], None, max_tokens), schema)
    # runs[mode][round] = one result per repetition; rounds alternate modes so drift hits both alike
    runs = {mode: [[] for _ in range(n_rounds)] for mode in ("constrained", "unconstrained")}
    lengths: list[list[int] | None] = [None] * n_rounds
    valid = closed = 0
    for rep in range(s.reps):
        log(f"batch {batch}: repetition {rep + 1}/{s.reps} ({n_rounds} rounds of each mode)")
        # the closing paths the grammar remembers by the tokens they follow: the same seeds would find every
        # one of them again, so each repetition starts without them (its rounds share them, as ticks do)
        engine.grammars.compile(schema).closing._paths.clear()
        for r in range(n_rounds):
            # constrained first the first time: its lengths (seeded, the same every time) drive the other mode
            first = "constrained" if lengths[r] is None or (rep + r) % 2 == 0 else "unconstrained"
            for mode in (first, "unconstrained" if first == "constrained" else "constrained"):
                con = mode == "constrained"
                res = decode_round(engine, rounds[r], round_params(seeds[r], None if con else lengths[r], max_tokens),
                                   schema if con else None)
                outs = res.pop("outs")
                if con and lengths[r] is None:
                    lengths[r] = [len(o.token_ids) for o in outs]
                    valid += sum(o.finish_reason == "stop" and msgspec.json.decode(o.text, type=schema) == o.value
                                 for o in outs)
                    closed += sum(o.budget_closed for o in outs)
                assert [len(o.token_ids) for o in outs] == lengths[r], "a run took other lengths than the first"
                runs[mode][r].append(res)
    con, unc = summary(runs["constrained"]), summary(runs["unconstrained"])
    assert con["decode_tokens"] == unc["decode_tokens"], "the two modes decoded different token counts"
    total = n_rounds * batch
    return {
        "batch": batch, "rounds": n_rounds, "requests_per_repetition": total, "repetitions": s.reps,
        "mean_completion_tokens": statistics.fmean(n for row in lengths for n in row),
        "max_tokens": max_tokens, "valid_actions": f"{valid}/{total}", "budget_closed": f"{closed}/{total}",
        "constrained": con,
        "unconstrained": {k: v for k, v in unc.items() if not k.startswith(("mask", "closing"))},
        "per_token_overhead": con["ms_per_token_best"] / unc["ms_per_token_best"] - 1,
        "per_token_overhead_median": con["ms_per_token_median"] / unc["ms_per_token_median"] - 1,
    }


def summary(per_round: list[list[dict]]) -> dict:
    """Best: each round's fastest repetition, summed (a burst of other load spoils one sample, not all).
    Median: of whole repetitions."""
    best = [min(reps, key=lambda r: r["seconds"]) for reps in per_round]
    seconds, tokens, steps = (sum(r[k] for r in best) for k in ("seconds", "tokens", "steps"))
    mask, closing, calls, cpu = (sum(r[k] for r in best)
                                 for k in ("mask_seconds", "closing_seconds", "closing_calls", "closing_cpu_seconds"))
    whole = [sum(reps[i]["seconds"] for reps in per_round) for i in range(len(per_round[0]))]
    return {"ms_per_token_best": 1e3 * seconds / tokens, "ms_per_token_median": 1e3 * statistics.median(whole) / tokens,
            "ms_per_step_best": 1e3 * seconds / steps, "decode_tokens": tokens, "decode_steps": steps,
            "mask_ms_per_step": 1e3 * mask / steps, "mask_share": mask / seconds,
            "closing_ms_per_step": 1e3 * closing / steps, "closing_share": closing / seconds,
            "closing_checks_per_token": calls / tokens, "closing_us_per_check": 1e6 * closing / calls if calls else 0.0,
            "closing_cpu_us_per_token": 1e6 * cpu / tokens}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: a smoke run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--model-dir", type=Path, default=None, help="write the model here, or reuse the one there")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    s = QUICK if args.quick else Sizes()
    if args.batches:
        s = replace(s, batches=tuple(int(x) for x in args.batches.split(",")))
    if args.reps:
        s = replace(s, reps=args.reps)
    model_sizes = QUICK_MODEL if args.quick else engine_bench.Sizes()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        cfg = engine_bench.model_config(model_sizes)
        folder = engine_bench.ensure_model(args.model_dir or Path(tmp) / "model", cfg)
        b = engine_bench.Bench(model_sizes, folder, args.seed)
        b.warm_up()
        log("hardware: memory bandwidth and matmul FLOP/s")
        hardware = roofline.measure(args.quick)
        result: dict = {
            "config": {"model": {f.name: getattr(model_sizes, f.name) for f in fields(engine_bench.Sizes)
                                 if f.name in ("hidden", "layers", "heads", "head_dim", "kv_heads", "experts",
                                               "top_k", "expert_width", "vocab")},
                       "tokenizer_vocab": Tokenizer.from_folder(folder).vocab_size,
                       "sizes": {f.name: getattr(s, f.name) for f in fields(Sizes)}, "quick": args.quick,
                       "torch": torch.__version__, "llguidance": llguidance.__version__,
                       "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "seed": args.seed,
                       "git": engine_bench.git_revision(),
                       "weights_mib": roofline.weight_bytes(b.model) / 2**20},
            "hardware": hardware,
            "schema": "Vote(target: 12 names) | Say(to: 12 names, text: str <= 48 chars) | "
                      "Move(place: 6 places, minutes: int 0..120), compact JSON",
            "near_budget_schema": f"the same with Say's text of any length, max_tokens={s.near_budget_tokens}",
        }
        rows = [(f"batch_{x}", x, {}) for x in s.batches]
        rows += [(f"near_budget_batch_{x}", x, {"schema": NearBudgetAction, "max_tokens": s.near_budget_tokens})
                 for x in s.batches]
        for name, batch, kind in rows:
            load = engine_bench.MachineLoad()
            row = measure_batch(b, s, batch, **kind)
            row["machine"] = load.report()
            result[name] = row
            log(f"{name}: overhead {100 * row['per_token_overhead']:.1f}% per token, closing paths "
                f"{row['constrained']['closing_ms_per_step']:.3f} ms a step"
                + (" (DISTURBED: other processes used the CPU)" if row["machine"]["disturbed"] else ""))
        worst = max(result[name]["per_token_overhead"] for name, _, _ in rows)
        result["target"] = "<= 5% per-token overhead of constrained over unconstrained decoding, every batch size"
        result["meets_target"] = worst <= 0.05
        result["disturbed_batches"] = [name for name, _, _ in rows if result[name]["machine"]["disturbed"]]
        result["total_seconds"] = time.perf_counter() - started
    return roofline.emit(result, args.output)


if __name__ == "__main__":
    main()
