"""The `swarm` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from swarm.bus.base import BusError
from swarm.engine_options import add_engine_options, engine_config
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


def _export_onnx(args: argparse.Namespace) -> int:
    from swarm.runtime.onnx_export import export_onnx

    done = export_onnx(args.model, args.out, adapter=args.adapter, opset=args.opset)
    print(f"wrote {done.folder} in {done.seconds:.1f}s: {done.model_file.name} "
          f"({done.model_file.stat().st_size / 2**20:.1f} MiB), genai_config.json, tokenizer files; onnxruntime "
          f"({done.provider}) matches the model's logits within {done.max_abs_error:.1e}")
    return 0


def _random_model(args: argparse.Namespace) -> int:
    from swarm.runtime.random_model import tiny_config, write_random_model

    cfg = tiny_config(args.family, vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                      num_experts=args.experts, top_k=args.top_k)
    path = write_random_model(args.out, cfg, seed=args.seed)
    print(f"wrote a random {args.family} model to {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from swarm.console import Progress, format_report
    from swarm.simulation import Simulation

    sim = Simulation.from_scenario(args.scenario, model=args.model, seed=args.seed, bus=args.bus,
                                   record=args.record, agents=args.agents, engine_config=engine_config(args),
                                   **({"name": args.name} if args.name else {}))
    engine = getattr(sim.model, "engine", None)
    if engine is not None and hasattr(engine, "memory_summary"):
        print(f"swarm: {engine.memory_summary()}; {len(sim.agents):,} agents", file=sys.stderr)
    # the live UI when asked, or by default on a terminal; headless (progress on stderr) otherwise
    tui = args.tui or (not args.headless and sys.stdin.isatty() and sys.stdout.isatty())
    interrupted = False
    try:
        report = sim.run(args.ticks, tui=True) if tui else sim.run(args.ticks, progress=Progress(args.ticks))
    except KeyboardInterrupt:  # stop between ticks' worth of work: the log holds every finished tick
        print(f"\nswarm: interrupted after {sim.counters['ticks']} ticks", file=sys.stderr)
        report = sim.report()
        args.checkpoint = None  # the tick in progress was cut short: its state is not one to resume from
        interrupted = True
    finally:
        if args.record:
            print(f"swarm: events recorded in {args.record}", file=sys.stderr)
    if args.checkpoint:  # only after a run that ended cleanly (a failed tick leaves half-applied state)
        sim.save(args.checkpoint)
        print(f"swarm: checkpoint saved to {args.checkpoint}", file=sys.stderr)
    sim.close()
    if args.json:
        print(report.to_json())
    else:
        print(format_report(report))
    return 130 if interrupted else 0


def _watch(args: argparse.Namespace) -> int:
    from swarm.tui import watch_tui

    watch_tui(args.url, args.sim)
    return 0


def _replay(args: argparse.Namespace) -> int:
    import msgspec

    from swarm.console import format_event
    from swarm.recorder import read_log

    if args.tui:
        from swarm.tui import replay_tui

        replay_tui(args.file)
        return 0
    header, events = read_log(args.file)
    if args.jsonl:
        for e in events:
            print(msgspec.json.encode(e).decode())
        return 0
    print(f"# {header.get('sim')} (seed {header.get('seed')}, model {header.get('model')}, "
          f"scenario {header.get('scenario')})")
    mpt, start = header.get("minutes_per_tick", 1.0), header.get("start_minute", 8 * 60)
    for e in events:
        print(format_event(e, mpt, start))
    return 0


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from swarm.train.pipeline import SMOKE, Recipe, train_swarm_tiny

    recipe = SMOKE if args.smoke else Recipe()
    changes = {"seed": args.seed}
    if args.scenario:
        changes.update(scenarios=tuple(args.scenario), agents=None)
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.ticks is not None:
        changes["ticks"] = args.ticks
    if args.steps is not None:
        changes["pretrain"] = replace(recipe.pretrain, steps=args.steps)
    if args.adapter_steps is not None:
        changes["adapter"] = replace(recipe.adapter, steps=args.adapter_steps)
    recipe = replace(recipe, **changes)
    command = "swarm train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else "swarm train"
    summary = train_swarm_tiny(args.out, recipe, command=command)
    print(f"trained {args.out}/model in {summary['seconds'] / 60:.1f} min: held-out answer loss "
          f"{summary['heldout_nll']:.3f} (untrained {summary['untrained_heldout_nll']:.3f}); model card in "
          f"{args.out}/model/README.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="Multi-agent simulation on small language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="complete a prompt with a model")
    g.add_argument("prompt")
    g.add_argument("--model", default="swarm-tiny", help="swarm-tiny (default) or a local Hugging Face model folder")
    g.add_argument("--max-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--adapter", help="a PEFT LoRA adapter folder to generate with")
    g.set_defaults(func=_generate)

    run = sub.add_parser("run", help="run a scenario headless and print its report")
    run.add_argument("scenario", help="a bundled scenario name or a Python file defining build(sim, **options)")
    run.add_argument("--ticks", type=int, default=20)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--model", default="swarm-tiny",
                     help="swarm-tiny (the bundled model, default), a local Hugging Face model folder, "
                     "`scripted` (the scenario's policy) or `random` (random valid actions)")
    run.add_argument("--agents", type=int, default=None, help="how many agents (scenarios that take it)")
    run.add_argument("--bus", default="local", help="local (default), mqtt://[user[:password]@]host:port or "
                     "mqtts://...?ca=CA.pem (TLS); add ?format=json for JSON payloads. With a user and no password "
                     "the password comes from SWARM_MQTT_PASSWORD")
    run.add_argument("--name", help="the simulation's name in bus topics (default: the scenario's)")
    run.add_argument("--record", help="write the event log (JSON lines) to this file")
    run.add_argument("--checkpoint", help="save a checkpoint here when the run ends (or fails)")
    run.add_argument("--headless", action="store_true", help="no TUI: progress on stderr, report on stdout")
    run.add_argument("--tui", action="store_true", help="watch it live (the default on a terminal)")
    run.add_argument("--json", action="store_true", help="print the report as one JSON line, last")
    add_engine_options(run)
    run.set_defaults(func=_run)

    t = sub.add_parser("train", help="train a small MoE and persona adapters on scenario demonstrations")
    t.add_argument("--out", required=True, help="folder for the data (out/data) and the model (out/model)")
    t.add_argument("--smoke", action="store_true", help="a tiny recipe that runs in seconds (tests the pipeline)")
    t.add_argument("--scenario", action="append", help="a scenario to learn from (repeatable; default: all four)")
    t.add_argument("--seeds", type=int, help="runs per scenario")
    t.add_argument("--ticks", type=int, help="ticks per run")
    t.add_argument("--steps", type=int, help="optimiser steps for the base model")
    t.add_argument("--adapter-steps", type=int, help="optimiser steps per adapter")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)

    rp = sub.add_parser("replay", help="print a recorded event log")
    rp.add_argument("file")
    rp.add_argument("--jsonl", action="store_true", help="one JSON event per line")
    rp.add_argument("--tui", action="store_true", help="play it in the terminal UI (p pause, arrows seek, g go to)")
    rp.set_defaults(func=_replay)

    w = sub.add_parser("watch", help="follow a simulation running elsewhere, over an MQTT broker, in the terminal UI")
    w.add_argument("url", help="the broker, mqtt://[user@]host:port or mqtts://[user@]host:port?ca=CA.pem "
                   "(the password from SWARM_MQTT_PASSWORD)")
    w.add_argument("--sim", required=True, help="the simulation's name")
    w.set_defaults(func=_watch)

    x = sub.add_parser("export-onnx", help="write the model as an ONNX decoder with a KV cache, plus tokenizer files")
    x.add_argument("--model", default="swarm-tiny", help="swarm-tiny (default) or a local Hugging Face model folder")
    x.add_argument("--out", required=True, help="the folder to write")
    x.add_argument("--adapter", help="merge this LoRA adapter: a PEFT folder, or the name of one in the model's "
                   "adapters/ folder")
    x.add_argument("--opset", type=int, default=15, help="ONNX opset (default 15, the newest Unity Sentis lists)")
    x.set_defaults(func=_export_onnx)

    from swarm.serve.command import add_parser as add_serve

    add_serve(sub)

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
    except BrokenPipeError:  # `swarm replay log | head`: the reader has all it wants
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps the exit flush from failing again)
        return 0
    except (SwarmError, ValueError, BusError) as e:
        print(f"swarm: error: {e}", file=sys.stderr)
        cause = e.__cause__
        if cause is not None and type(e).__name__ == "ScenarioError":  # show where in the scenario's code
            import traceback

            print("".join(traceback.format_exception(cause, limit=-3)).rstrip(), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
