"""The `swarm` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from swarm.bus.base import BusError
from swarm.engine_options import add_engine_options, add_quantize_option, engine_config
from swarm.runtime.errors import SwarmError


def _generate(args: argparse.Namespace) -> int:
    from swarm.runtime import Engine, SamplingParams

    t0 = time.perf_counter()
    engine = Engine.from_pretrained(args.model, quantize=args.quantize)
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


CHECKPOINT_EVERY = 10  # ticks between checkpoint writes when --checkpoint is given without --checkpoint-every


def _run(args: argparse.Namespace) -> int:
    from swarm.simulation import Simulation

    if args.checkpoint_every is not None and not args.checkpoint:
        raise ValueError("--checkpoint-every needs --checkpoint FILE")
    if not args.record_demos and (args.demos_successful or args.demo_agents or args.demo_kinds or args.demo_actions):
        raise ValueError("--demos-successful, --demo-agents, --demo-kinds and --demo-actions need --record-demos FILE")
    if args.checkpoint and Path(args.checkpoint).exists():
        raise ValueError(f"{args.checkpoint} already holds a checkpoint: continue that run with `swarm resume "
                         f"{args.checkpoint}`, or remove the file to start again")
    if args.history and not Path(args.history).resolve().parent.is_dir():
        raise ValueError(f"cannot write the history to {args.history}: folder {Path(args.history).parent} "
                         "does not exist")
    if args.play and args.headless:
        raise ValueError("--play needs the TUI: a person answers the agent's turns there (drop --headless)")
    options = _scenario_options(args)
    model, config = _sampled_model(args.model, engine_config(args), args)
    sim = Simulation.from_scenario(args.scenario, model=model, seed=args.seed, bus=args.bus, record=args.record,
                                   engine_config=config, **options, **({"name": args.name} if args.name else {}))
    try:
        unknown = sorted(set(_names(args.play) or ()) - set(sim.agents))
        if unknown:
            raise ValueError(f"--play: no agent called {', '.join(unknown)}; agents: {', '.join(sim.agents)}")
        args.adapters = _adapter_specs(args.adapter)
        _add_adapters(sim, args.adapters, assign=True)
        if args.record_demos:
            sim.record_demos(args.record_demos, successful_only=args.demos_successful,
                             agents=_names(args.demo_agents), kinds=_names(args.demo_kinds),
                             actions=_names(args.demo_actions))
    except BaseException:
        sim.close()
        raise
    return _drive(sim, args.ticks, args)


def _adapter_specs(specs: list[str] | None) -> list[tuple[list[str] | None, str]]:
    """--adapter [AGENT,AGENT=]FOLDER values -> (the agents, or None for all of them; the folder, absolute)."""
    out = []
    for spec in specs or ():
        agents, _, folder = spec.rpartition("=")
        if not folder:
            raise ValueError(f"--adapter takes [AGENT,AGENT=]FOLDER, got {spec!r}")
        out.append((_names(agents) if agents else None, str(Path(folder).resolve())))
    return out


def _add_adapters(sim, specs: list[tuple[list[str] | None, str]], assign: bool) -> None:
    """Register each adapter folder on the simulation's engine, under the folder's name, and (`assign`) give it
    to its agents. A resumed run only registers them: its personas kept their adapters."""
    if not specs:
        return
    engine = getattr(sim.model, "engine", None)
    if engine is None:
        raise ValueError("--adapter needs a model swarm runs itself (swarm-tiny, a checkpoint folder or a GGUF file), "
                         f"not {sim.model.ref or type(sim.model).__name__}")
    added: dict[str, str] = {}  # name -> folder, registered here
    for agents, folder in specs:
        name = Path(folder).name
        if name not in added:  # a folder given twice (for other agents) is registered once
            if name in engine.adapters():
                raise ValueError(f"--adapter {folder}: an adapter called {name!r} is already loaded (from the "
                                 "model folder): give the folder another name")
            engine.add_adapter(name, folder)
            added[name] = folder
        elif added[name] != folder:
            raise ValueError(f"--adapter {folder}: an adapter called {name!r} is already loaded (from "
                             f"{added[name]}): give the folder another name")
        for agent in (agents or list(sim.agents)) if assign else ():
            sim.use_adapter(agent, name)


def _tui(sim, ticks: int, play: list[str]):
    from swarm.tui import run_tui

    return run_tui(sim, ticks, play=play)


def _train_adapter(args: argparse.Namespace) -> int:
    """`swarm train adapter`: progress on stderr, the summary as the last line of stdout (JSON)."""
    from swarm.train.adapter import AdapterRecipe, print_progress, train_adapter

    if not 0 <= args.heldout < 1:
        raise ValueError(f"--heldout is a share in [0, 1), got {args.heldout}")
    if Path(args.adapter_out).exists() and any(Path(args.adapter_out).iterdir()):
        raise ValueError(f"{args.adapter_out} is not empty: pick a new folder for the adapter")
    recipe = AdapterRecipe(steps=args.adapter_steps, rank=args.rank, alpha=2.0 * args.rank, lr=args.lr,
                           heldout=args.heldout, targets=tuple(_names(args.targets) or ()), seed=args.seed)
    summary = train_adapter(args.base, args.demos, args.adapter_out, recipe, progress=print_progress)
    print(f"adapter in {args.adapter_out}: held-out loss {summary['heldout_loss_before']:.3f} -> "
          f"{summary['heldout_loss_after']:.3f} nats/token on {summary['heldout']} demonstrations (the weights of "
          f"step {summary['best_step']} of {args.adapter_steps}; {summary['train']} trained on, "
          f"{summary['seconds']:.0f} s)", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _names(value: str | None) -> list[str] | None:
    """A comma-separated flag's names (None when the flag was not given)."""
    return None if value is None else [n.strip() for n in value.split(",") if n.strip()]


def _scenario_options(args: argparse.Namespace) -> dict:
    """The scenario's options: `--agents`, and every `--set NAME=VALUE` (checked against the scenario)."""
    import inspect

    from swarm.scenario import builder, load_module, parse_settings
    from swarm.simulation import Simulation

    options = {"agents": args.agents} if args.agents is not None else {}
    if not args.set:
        return options
    own = inspect.signature(Simulation).parameters
    settings = parse_settings(args.set, builder(load_module(args.scenario), args.scenario), args.scenario)
    for name, value in settings.items():
        if name in options:
            raise ValueError(f"--set {name}=... and --{name} both give {name}: give it once")
        if name in own:  # from_scenario would take it for the simulation's own
            raise ValueError(f"--set {name}: {name} is a setting of the simulation itself, not a scenario option"
                             + (f" (swarm run --{name})" if name in ("seed", "bus", "name", "record") else ""))
        options[name] = value
    return options


def _sampled_model(model: str, config, args: argparse.Namespace) -> tuple:
    """(model, engine config) for the simulation: with `--temperature`/`--top-p`, the model made here with
    them (and the config); otherwise the name as given, for the simulation to open."""
    sampling = {k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p)) if v is not None}
    if not sampling:
        return model, config
    flags = " and ".join(f"--{k.replace('_', '-')}" for k in sampling)
    if model in ("scripted", "random"):
        raise ValueError(f"--model {model} decides turns without sampling, so {flags} cannot apply: leave "
                         f"{'it' if len(sampling) == 1 else 'them'} out, or run a language model (e.g. --model "
                         "swarm-tiny)")
    from swarm.model import open_model

    return open_model(model, config, **sampling), None


def _resume(args: argparse.Namespace) -> int:
    from swarm.simulation import Simulation

    info = Simulation.checkpoint_info(args.checkpoint)
    run = info["run"] or {}
    if "ticks" not in run:
        raise ValueError(f"{args.checkpoint} was not kept by `swarm run --checkpoint`, so it does not say how long "
                         "its run is; continue it in Python with Simulation.load")
    scenario = info["scenario"]["spec"] if info["scenario"] else "none"
    options = info["scenario"]["options"] if info["scenario"] else {}
    record = info["record"]["path"] if info["record"] else None
    print(f"swarm: resuming {info['name']!r} at tick {info['tick']} of {run['ticks']}: scenario {scenario}"
          + "".join(f" {k}={v!r}" for k, v in options.items() if v is not None)
          + f" (its build code runs), model {args.model or info['model']}, bus {args.bus or info['bus']}"
          + (f", log {record}" if record else ""), file=sys.stderr)
    for option in ("kv_memory", "kv_dtype", "quantize"):  # as the run was started, unless given again
        if getattr(args, option) is None:
            setattr(args, option, run.get(option))
    # sampling as the run was started: a resumed run goes on as the uninterrupted one would have
    args.temperature, args.top_p, args.history = run.get("temperature"), run.get("top_p"), run.get("history")
    model, config = _sampled_model(args.model or info["model"], engine_config(args), args)
    sim = Simulation.load(args.checkpoint, model=model, bus=args.bus, engine_config=config)
    args.adapters = [(agents, folder) for agents, folder in run.get("adapters") or ()]
    try:
        _add_adapters(sim, args.adapters, assign=False)
    except BaseException:
        sim.close()
        raise
    args.record, args.checkpoint_every = record, args.checkpoint_every or run.get("every")
    return _drive(sim, run["ticks"], args)


def _drive(sim, total: int, args: argparse.Namespace) -> int:
    """Run `sim` up to tick `total`, keeping `args.checkpoint`, then report; the exit status says how it ended."""
    from swarm.console import Progress, format_report, write_history

    if args.checkpoint:
        every = args.checkpoint_every or CHECKPOINT_EVERY
        sim.autosave(args.checkpoint, every, run={
            "ticks": total, "every": every, "kv_memory": args.kv_memory, "kv_dtype": args.kv_dtype,
            "quantize": args.quantize, "adapters": getattr(args, "adapters", None),
            "temperature": args.temperature, "top_p": args.top_p,
            "history": str(Path(args.history).resolve()) if args.history else None})
    engine = getattr(sim.model, "engine", None)
    if engine is not None and hasattr(engine, "memory_summary"):
        print(f"swarm: {engine.memory_summary()}; {len(sim.agents):,} agents", file=sys.stderr)
    # the live UI when asked (or to play an agent), or by default on a terminal; headless otherwise
    play = _names(getattr(args, "play", None)) or []
    tui = args.tui or bool(play) or (not args.headless and sys.stdin.isatty() and sys.stdout.isatty())
    remaining = max(0, total - sim.counters["ticks"])
    stop = _StopOnSignal(sim) if not tui else None
    status, cut_short = 0, False
    try:
        with stop or contextlib.nullcontext():
            report = _tui(sim, remaining, play) if tui else sim.run(
                remaining, progress=Progress(total, start=sim.counters["ticks"]))
        if stop is not None and stop.signal is not None:
            print(f"swarm: stopped by {stop.signal.name} after tick {sim.counters['ticks']}", file=sys.stderr)
            status = 128 + stop.signal
    except KeyboardInterrupt:  # a second Ctrl-C: the tick in progress was cut short
        print(f"\nswarm: interrupted after {sim.counters['ticks']} ticks", file=sys.stderr)
        report, status, cut_short = sim.report(), 130, True
    except BaseException:
        if args.checkpoint and Path(args.checkpoint).exists():
            print(f"swarm: the run failed; continue it from tick {sim.checkpoint_info(args.checkpoint)['tick']} "
                  f"with `swarm resume {args.checkpoint}`", file=sys.stderr)
        raise
    finally:
        if args.record:
            print(f"swarm: events recorded in {args.record}", file=sys.stderr)
        if sim.demos is not None:
            print(f"swarm: {sim.demos.written:,} demonstrations written to {sim.demos.path}", file=sys.stderr)
    if args.checkpoint:
        if not cut_short:  # a tick cut short left the checkpoint at the state before it
            sim.save(args.checkpoint)
        done = sim.counters["ticks"] >= total
        print(f"swarm: checkpoint {args.checkpoint} at tick {sim.checkpoint_info(args.checkpoint)['tick']}"
              + ("" if done else f"; continue with `swarm resume {args.checkpoint}`"), file=sys.stderr)
    try:
        sim.close()  # over MQTT: waits for the broker to take every buffered event
        undelivered = None
    except BusError as e:
        undelivered = e
    if args.history:
        write_history(report.history, args.history)
        print(f"swarm: history of {len(report.history)} ticks written to {args.history}", file=sys.stderr)
    print(report.to_json() if args.json else format_report(report))
    if undelivered is not None:  # the run itself went through; its events did not all reach the bus
        print(f"swarm: error: {undelivered}", file=sys.stderr)
        return status or 2
    return status


class _StopOnSignal:
    """SIGINT or SIGTERM ends the run after the tick in progress (its state is then whole and saved); a second
    SIGINT stops at once."""

    def __init__(self, sim):
        self.sim, self.signal, self._old = sim, None, {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._first)
        return self

    def _first(self, signum, frame):
        if self.signal is not None:  # asked twice
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum)
        self.sim.stop()
        print(f"\nswarm: {self.signal.name}: stopping after this tick (Ctrl-C again stops now)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


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

    if args.what == "adapter":
        return _train_adapter(args)
    if not args.out:
        raise ValueError("swarm train needs --out FOLDER (or: swarm train adapter --base ... --demos ... --out ...)")

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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _temperature(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (0 is greedy, 0.7 the default), got {text}")
    return value


def _top_p(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number above 0 and at most 1 (1 keeps every token, 0.95 the "
                                         f"default), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="Multi-agent simulation on small language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="complete a prompt with a model")
    g.add_argument("prompt")
    g.add_argument("--model", default="swarm-tiny",
                   help="swarm-tiny (default), a local Hugging Face model folder or a .gguf file")
    g.add_argument("--max-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--adapter", help="a PEFT LoRA adapter folder to generate with")
    add_quantize_option(g)
    g.set_defaults(func=_generate)

    run = sub.add_parser("run", help="run a scenario headless and print its report")
    run.add_argument("scenario", help="a bundled scenario name or a Python file defining build(sim, **options)")
    run.add_argument("--ticks", type=int, default=20)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--model", default="swarm-tiny",
                     help="swarm-tiny (the bundled model, default), a local Hugging Face model folder, a .gguf file, "
                     "mqtt://host:port/POOL (the workers of a pool: swarm worker), openai:BASE_URL#MODEL (an "
                     "OpenAI-compatible server: vLLM, llama.cpp, Ollama, swarm serve --http; the key from "
                     "OPENAI_API_KEY), `scripted` (the scenario's policy) or `random` (random valid actions)")
    run.add_argument("--agents", type=int, default=None, help="how many agents (scenarios that take it)")
    run.add_argument("--set", action="append", metavar="NAME=VALUE",
                     help="a scenario option, e.g. --set gathering=19:00 (repeatable; the value is read as JSON when "
                     "it is JSON: numbers, true/false, lists; else as text). An unknown name lists the options")
    run.add_argument("--temperature", type=_temperature, metavar="T",
                     help="how a language model samples each turn: 0 is greedy (default 0.7); not for --model "
                     "scripted or random")
    run.add_argument("--top-p", type=_top_p, metavar="P",
                     help="sample from the likeliest tokens that together make up P of the probability (default "
                     "0.95; 1 keeps all)")
    run.add_argument("--bus", default="local", help="local (default), mqtt://[user[:password]@]host:port or "
                     "mqtts://...?ca=CA.pem (TLS); add ?format=json for JSON payloads. With a user and no password "
                     "the password comes from SWARM_MQTT_PASSWORD")
    run.add_argument("--name", help="the simulation's name in bus topics (default: the scenario's)")
    run.add_argument("--record", help="write the event log (JSON lines) to this file")
    run.add_argument("--record-demos", metavar="FILE", help="write every answered turn as chat fine-tuning data "
                     "(JSON lines: the messages and the answer, with scenario, agent, tick, persona, adapter, model "
                     "and the answer's schema) to this new file")
    run.add_argument("--demos-successful", action="store_true",
                     help="with --record-demos: leave out act turns whose action failed")
    run.add_argument("--demo-agents", metavar="A,B", help="with --record-demos: only these agents")
    run.add_argument("--demo-kinds", metavar="KINDS", help="with --record-demos: only these turn kinds (act, "
                     "reflect, plan)")
    run.add_argument("--demo-actions", metavar="A,B", help="with --record-demos: only act turns that chose these "
                     "actions (say, bid, ...)")
    run.add_argument("--checkpoint", help="keep a checkpoint here: every --checkpoint-every ticks, at the end, and "
                     "when the run fails or is stopped (SIGINT, SIGTERM); `swarm resume FILE` continues the run")
    run.add_argument("--checkpoint-every", type=_positive, metavar="N",
                     help=f"ticks between checkpoint writes (default {CHECKPOINT_EVERY})")
    run.add_argument("--headless", action="store_true", help="no TUI: progress on stderr, report on stdout")
    run.add_argument("--tui", action="store_true", help="watch it live (the default on a terminal)")
    run.add_argument("--adapter", action="append", metavar="[AGENT,AGENT=]FOLDER",
                     help="a LoRA adapter folder (PEFT, e.g. from `swarm train adapter`) for these agents, or all of "
                     "them; repeatable; it is registered under the folder's name")
    run.add_argument("--play", metavar="AGENT[,AGENT]", help="play these agents yourself in the TUI: on their turns a "
                     "form asks for their action (c on the roster takes or gives back any agent)")
    run.add_argument("--json", action="store_true", help="print the report as one JSON line, last (with the "
                     "per-tick history)")
    run.add_argument("--history", metavar="FILE.csv", help="write the per-tick metrics (the report's history) "
                     "to this CSV file, a row per tick")
    add_engine_options(run)
    run.set_defaults(func=_run)

    rs = sub.add_parser("resume", help="continue a run from its checkpoint (swarm run --checkpoint) to its --ticks")
    rs.add_argument("checkpoint")
    rs.add_argument("--model", help="override the checkpoint's model (same weights, another place)")
    rs.add_argument("--bus", help="override the checkpoint's bus URL")
    rs.add_argument("--checkpoint-every", type=_positive, metavar="N",
                    help="ticks between checkpoint writes (default: as the run was started)")
    rs.add_argument("--headless", action="store_true", help="no TUI: progress on stderr, report on stdout")
    rs.add_argument("--tui", action="store_true", help="watch it live (the default on a terminal)")
    rs.add_argument("--json", action="store_true", help="print the report as one JSON line, last")
    add_engine_options(rs)
    rs.set_defaults(func=_resume)

    t = sub.add_parser("train", help="train a small MoE and persona adapters on scenario demonstrations")
    t.add_argument("--out", help="folder for the data (out/data) and the model (out/model)")
    t.add_argument("--smoke", action="store_true", help="a tiny recipe that runs in seconds (tests the pipeline)")
    t.add_argument("--scenario", action="append", help="a scenario to learn from (repeatable; default: all four)")
    t.add_argument("--seeds", type=int, help="runs per scenario")
    t.add_argument("--ticks", type=int, help="ticks per run")
    t.add_argument("--steps", type=int, help="optimiser steps for the base model")
    t.add_argument("--adapter-steps", type=int, help="optimiser steps per adapter")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)

    ta = t.add_subparsers(dest="what", metavar="{adapter}").add_parser(
        "adapter", help="tune a persona's LoRA adapter on recorded demonstrations (swarm run --record-demos)")
    ta.add_argument("--base", default="swarm-tiny", help="the model to tune: swarm-tiny (default), a checkpoint "
                    "folder, or a .gguf file transformers reads")
    ta.add_argument("--demos", nargs="+", required=True, metavar="FILE", help="demonstration files (JSON lines)")
    ta.add_argument("--out", dest="adapter_out", required=True, help="the adapter folder to write (PEFT format)")
    ta.add_argument("--steps", dest="adapter_steps", type=_positive, default=200, help="optimiser steps (200)")
    ta.add_argument("--rank", type=_positive, default=8, help="LoRA rank (8)")
    ta.add_argument("--lr", type=float, default=1e-3, help="learning rate (1e-3)")
    ta.add_argument("--heldout", type=float, default=0.1, help="share of the demonstrations held out (0.1)")
    ta.add_argument("--targets", default=",".join(("q_proj", "k_proj", "v_proj", "o_proj")),
                    help="modules to put LoRA on (default: the attention projections)")
    ta.add_argument("--seed", type=int, default=0)

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

    from swarm.pool.command import add_parser as add_worker
    from swarm.serve.command import add_parser as add_serve

    add_serve(sub)
    add_worker(sub)

    r = sub.add_parser("random-model", help="write a small random-weight model folder (for trying the runtime)")
    r.add_argument("out")
    r.add_argument("--family", default="qwen3_moe",
                   choices=["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mixtral",
                            "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"])
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
