"""A game loop with many characters talking: frame times with swarm.game against calling the engine
synchronously inside the frame, side by side in one run.

    .venv/bin/python benchmarks/game_loop.py                  # 50 characters, 600 frames at 60 FPS, update(4)
    .venv/bin/python benchmarks/game_loop.py --quick          # 10 characters, 120 frames

Every mode plays the same script: character i starts a line (its own seeded sampling) every
`period` seconds of game time, staggered, and each frame does `game_ms` of plain Python work (the
game's own logic). The frame loop runs at the target rate (it sleeps until the next frame), and a
frame's time is its work: the game's logic plus whatever the model took on the game's thread.

- `update`: `runtime.update(budget_ms)` once per frame (the model runs on the game's thread, in
  slices that fit the budget, a pass spread over frames when it must);
- `threaded`: `GameRuntime(threaded=True)`, the model in a background thread, `update()` only fires the
  callbacks (the game's thread still shares the interpreter with the worker);
- `sync`: a character's line is generated to the end inside the frame that asks for it
  (`engine.generate`, the way an engine is called when it has no frame-budgeted API).

The hardware limit, measured in the same run: the engine's own decode step for one sequence and
for every character at once (the least a frame that decodes must pay), and the machine's memory
bandwidth and float32 matmul rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from swarm.game import GameRuntime
from swarm.runtime import Engine, SamplingParams

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from roofline import matmul_flops, memory_bandwidth  # noqa: E402

NAMES = ["Mira", "Bram", "Tova", "Ilse", "Oren", "Pell", "Wren", "Cato", "Hedda", "Jory", "Sabe", "Lune"]
ROLES = ["innkeeper", "miller", "baker", "weaver", "farmer", "porter", "herbalist", "merchant", "cook", "carter"]
LINES = ["Any news today?", "What do you make of the weather?", "Seen the miller's dog?", "Where are you headed?"]


def log(msg: str) -> None:
    print(f"[game-loop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def busy(ms: float) -> None:
    """The game's own per-frame work: plain Python, holding the interpreter as game code does."""
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        x += 1


def script(args) -> dict[int, list[int]]:
    """frame -> the characters that start a line then."""
    period = int(args.period * args.fps)
    plan: dict[int, list[int]] = {}
    for i in range(args.characters):
        for f in range(i * period // args.characters, args.frames, period):
            plan.setdefault(f, []).append(i)
    return plan


def play(args, engine: Engine, mode: str) -> dict:
    engine.scheduler.cache.clear()
    runtime = GameRuntime(engine=engine, world="A small town by a river.", threaded=mode == "threaded",
                      max_tokens=args.tokens, temperature=0.8)
    cast = [runtime.character(f"{NAMES[i % len(NAMES)]}{i}", ROLES[i % len(ROLES)]) for i in range(args.characters)]
    plan, frame_s, model_s = script(args), [], []
    tokens, lines, latency, t_start = [0], [0], [], time.perf_counter()
    next_frame = t_start
    asked: dict[int, float] = {}  # id(line) -> when it was asked for

    def on_done(line):
        if line.finish_reason in ("stop", "length"):  # not the lines close() cancels at the end
            tokens[0] += line.tokens
            lines[0] += 1
            latency.append(time.perf_counter() - asked[id(line)])

    for f in range(args.frames):
        t0 = time.perf_counter()
        busy(args.game_ms)
        for i in plan.get(f, ()):
            seed = f * 1000 + i
            if mode == "sync":
                c = cast[i]
                t_ask = time.perf_counter()
                [out] = engine.generate([engine.tokenizer.apply_chat_template(c.messages(LINES[i % len(LINES)]))],
                                        SamplingParams(max_tokens=args.tokens, temperature=0.8, seed=seed),
                                        personas=c.name)
                tokens[0] += len(out.token_ids)
                lines[0] += 1
                latency.append(time.perf_counter() - t_ask)
            else:
                line = cast[i].say(LINES[i % len(LINES)], on_done=on_done, seed=seed)
                asked[id(line)] = time.perf_counter()
        t1 = time.perf_counter()
        if mode != "sync":
            runtime.update(args.budget_ms)
        t2 = time.perf_counter()
        frame_s.append(t2 - t0)
        model_s.append(t2 - t1 + (t1 - t0 - args.game_ms / 1000 if mode == "sync" else 0.0))
        next_frame += 1 / args.fps
        time.sleep(max(0.0, next_frame - time.perf_counter()))
    wall = time.perf_counter() - t_start
    runtime.close()
    ms, waits = sorted(s * 1000 for s in frame_s), sorted(s * 1000 for s in latency) or [float("nan")]
    frame_budget = 1000 / args.fps
    return {"frame_ms": {"mean": statistics.fmean(ms), "p50": ms[len(ms) // 2], "p99": ms[int(0.99 * (len(ms) - 1))],
                         "max": ms[-1]},
            "frames_over_frame_budget": sum(m > frame_budget for m in ms),
            "model_share_of_frame": sum(model_s) / sum(frame_s), "tokens_delivered": tokens[0],
            "lines_finished": lines[0], "lines_asked": sum(len(v) for v in plan.values()),
            "line_ms": {"p50": waits[len(waits) // 2], "p99": waits[int(0.99 * (len(waits) - 1))]},
            "tokens_per_s": tokens[0] / wall, "wall_s": wall,
            "game_seconds_behind": max(0.0, wall - args.frames / args.fps)}


def decode_floor(engine: Engine, batch: int, steps: int = 20) -> float:
    """Median seconds of one decode step with `batch` sequences (a short prompt each, cache cleared)."""
    engine.scheduler.cache.clear()
    params = SamplingParams(max_tokens=steps + 2, temperature=0.0, ignore_eos=True)
    handles = [engine.submit([5 + i, 9, 33, 7], params) for i in range(batch)]
    engine.step()  # the prefill
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
    for h in handles:
        h.cancel()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="swarm-tiny")
    p.add_argument("--characters", type=int, default=50)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--fps", type=int, default=60)
    p.add_argument("--budget-ms", type=float, default=4.0)
    p.add_argument("--game-ms", type=float, default=2.0, help="the game's own work per frame")
    p.add_argument("--period", type=float, default=4.0, help="seconds between one character's lines")
    p.add_argument("--tokens", type=int, default=24, help="max tokens per line")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a game keeps a core for itself)")
    p.add_argument("--modes", default="update,threaded,sync")
    p.add_argument("--quick", action="store_true", help="10 characters, 120 frames")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.characters, args.frames = 10, 120
    torch.set_num_threads(args.threads)
    engine = Engine.from_pretrained(args.model)
    log("hardware")
    hardware = {**memory_bandwidth(256, 3), **matmul_flops(1024, 3), "torch_threads": torch.get_num_threads(),
                "decode_step_ms_1_seq": decode_floor(engine, 1) * 1000,
                f"decode_step_ms_{args.characters}_seqs": decode_floor(engine, args.characters) * 1000}
    results = {}
    for mode in args.modes.split(","):
        log(f"{mode}: {args.characters} characters, {args.frames} frames")
        results[mode] = play(args, engine, mode)
    out = {"config": {k: v for k, v in vars(args).items() if k not in ("output", "quick", "modes")},
           "torch": torch.__version__, "hardware": hardware, "modes": results,
           "note": "frame_ms is the work of a frame (game logic + the model's time on the game's thread)"}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
