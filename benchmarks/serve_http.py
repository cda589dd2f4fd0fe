"""`swarm serve --http` (the OpenAI API): throughput and time to first token for N concurrent clients, against the
engine driven directly in the same run.

    .venv/bin/python benchmarks/serve_http.py --output benchmarks/results/http-cpu.json   # swarm-tiny, 1/8/32 clients
    .venv/bin/python benchmarks/serve_http.py --clients 4 16 --max-tokens 32 --model path/to/hf_folder

Starts `swarm serve --http` as a subprocess (its own process, as in production). N clients, one connection each,
each send one chat completion at once, streamed (`stream_options.include_usage`: they time their first text and
their last event) and then whole (what a simulation's turns send: they time the answer). The clients are a few
lines of asyncio HTTP/1.1 that look for the first text and the usage in the events rather than parse each one
(the `openai` package would do): on a 2-core machine the load generator shares the CPUs with the server, and a
heavier client would measure itself. Then the same N chats (the same rendered prompts, seeds and sampling) run
on an engine in this process with no HTTP at all, submitted together and stepped to the end, timing each one's
first token. The three take turns, `--repeat` times. Per N (the median run): tokens/s all three ways,
`vs_direct` (HTTP / direct tokens/s, the median of the runs' ratios: what the HTTP stack, the JSON and the
per-step streaming cost), `vs_direct_cpu` (direct / server CPU time per token: the same cost in CPU, which
other processes on a shared machine disturb far less than wall time; the clients' own CPU is not counted) and
the time to first token streamed and direct. Then a simulation: the village at temperature 0 through `OpenAIModel`
on the server, and on the engine in this process, taking turns `--village-repeat` times: ticks/s both ways and
whether the two event logs are the same (they must be). The machine's memory bandwidth and matmul rate are
measured in the same run. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SYSTEM = "You are {name}, a villager of Eldham. You answer in one or two short sentences."
# What the clients look for in the events instead of parsing each one (the load generator must cost little):
# the first text (a chat chunk's delta with content, not the role's empty one), and the usage at the end.
TEXT = re.compile(rb'"delta":\{"content":"[^"]')
USAGE = re.compile(rb'"completion_tokens":(\d+)')
LINES = ["A traveller asks for news.", "The bread is late again.", "Who was at the mill last night?",
         "A stranger wants a room.", "The guard asks about the fire."]


def chat(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM.format(name=f"npc{i % 8}")},
            {"role": "user", "content": LINES[i % len(LINES)]}]


def body(model: str, i: int, max_tokens: int, stream: bool) -> bytes:
    request = {"model": model, "messages": chat(i), "max_tokens": max_tokens, "temperature": 0.7, "top_p": 0.95,
               "seed": i}
    if stream:
        request.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(request).encode()


async def one_client(port: int, payload: bytes, start: asyncio.Event) -> dict:
    """One chat over a connection of its own: seconds to the first text (streamed; else to the answer) and to the
    end, and the tokens generated."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
    await start.wait()
    t0 = time.perf_counter()
    writer.write(head + payload)
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"the server answered {status!r}: {await reader.read()!r}")
    headers = {}
    while line := (await reader.readline()).strip():
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    if "content-length" in headers:  # a whole answer
        data = await reader.readexactly(int(headers["content-length"]))
        total = time.perf_counter() - t0
        writer.close()
        return {"first_s": total, "total_s": total, "tokens": int(USAGE.search(data).group(1))}
    first = tokens = None
    while True:  # the body's HTTP chunks: the server writes whole events in each
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            break
        data = await reader.readexactly(size + 2)
        if first is None and TEXT.search(data):
            first = time.perf_counter() - t0
        if (usage := USAGE.search(data)) is not None:
            tokens = int(usage.group(1))
    total = time.perf_counter() - t0
    writer.close()
    return {"first_s": first if first is not None else total, "total_s": total, "tokens": tokens}


async def over_http(server: subprocess.Popen, port: int, model: str, clients: int, max_tokens: int,
                    stream: bool = True) -> dict:
    start = asyncio.Event()
    tasks = [asyncio.ensure_future(one_client(port, body(model, i, max_tokens, stream), start))
             for i in range(clients)]
    await asyncio.sleep(0.2)  # every connection open
    t0, cpu0 = time.perf_counter(), process_cpu(server.pid)
    start.set()
    results = await asyncio.gather(*tasks)
    return summary(results, time.perf_counter() - t0, process_cpu(server.pid) - cpu0)


def process_cpu(pid: int) -> float:
    """CPU seconds the live threads of process `pid` have run (Linux: each thread's schedstat, in nanoseconds,
    where /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            pass
    return total / 1e9


def direct(engine, clients: int, max_tokens: int) -> dict:
    """The same chats on the engine in this process: no HTTP, no JSON. Call it on the engine thread."""
    from swarm.runtime import SamplingParams
    from swarm.runtime.chat import render_chat

    prompts = [engine.tokenizer.encode(render_chat(engine.tokenizer, chat(i))) for i in range(clients)]
    t0, cpu0 = time.perf_counter(), process_cpu(os.getpid())
    handles = [engine.submit(p, SamplingParams(max_tokens=max_tokens, temperature=0.7, top_p=0.95, seed=i))
               for i, p in enumerate(prompts)]
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    while len(done) < clients:
        engine.step()
        now = time.perf_counter() - t0
        for i, h in enumerate(handles):
            if i not in first and (h.done or h.partial_text()):
                first[i] = now
            if i not in done and h.done:
                done[i] = now
    results = [{"first_s": first[i], "total_s": done[i], "tokens": len(h.result().token_ids)}
               for i, h in enumerate(handles)]
    return summary(results, time.perf_counter() - t0, process_cpu(os.getpid()) - cpu0)


def summary(results: list[dict], wall: float, cpu: float) -> dict:
    """`cpu`: the CPU seconds the serving process (the server, or this one for direct runs) used meanwhile."""
    tokens = sum(r["tokens"] for r in results)
    first = sorted(r["first_s"] for r in results)
    return {"tokens_per_s": tokens / wall, "tokens": tokens, "wall_s": wall, "cpu_us_per_token": 1e6 * cpu / tokens,
            "first_token_ms": {"p50": 1000 * statistics.median(first), "max": 1000 * first[-1]}}


def village(model, ticks: int, folder: Path, name: str) -> tuple[float, list[tuple]]:
    """(seconds, the event log as (tick, kind, actor, text)) of `ticks` ticks of the village on `model`."""
    from swarm.recorder import read_log
    from swarm.simulation import Simulation

    log = folder / f"{name}.jsonl"
    log.unlink(missing_ok=True)
    sim = Simulation.from_scenario("village", model=model, seed=7, record=log)
    t0 = time.perf_counter()
    sim.run(ticks)
    seconds = time.perf_counter() - t0
    sim.close()
    return seconds, [(e.tick, e.kind, e.actor, e.text) for e in read_log(log)[1]]


def start_server(model: str, port: int, kv_memory: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "swarm.cli", "serve", "--http", f"127.0.0.1:{port}", "--model",
                             model, "--kv-memory", kv_memory], stderr=subprocess.PIPE, text=True)
    while "OpenAI API at" not in (line := proc.stderr.readline()):
        if not line:
            raise RuntimeError("swarm serve --http exited before serving")
    return proc


async def main_async(args) -> dict:
    import roofline
    from serve import median_run

    from swarm.bus.broker import free_port
    from swarm.runtime import Engine, EngineConfig

    out = {"benchmark": "http", "model": args.model, "max_tokens": args.max_tokens, "repeat": args.repeat,
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                       "processor": platform.processor()},
           "load_avg_before": os.getloadavg()[0],
           "hardware": {**roofline.memory_bandwidth(), **roofline.matmul_flops()}, "runs": []}
    port = free_port()
    server = start_server(args.model, port, args.kv_memory)
    engine = Engine.from_pretrained(args.model, config=EngineConfig(kv_memory=args.kv_memory))
    # The direct runs step the engine on a thread of their own too, as the server does: on a busy 2-core machine
    # torch steps in a process's main thread were measured 5-10x slower than on a worker thread (benchmarks/serve.py).
    engine_thread = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    async def run_direct(n: int) -> dict:
        return await loop.run_in_executor(engine_thread, direct, engine, n, args.max_tokens)

    try:
        await over_http(server, port, args.model, 2, args.max_tokens)  # warm-up: first steps, the prefix cache
        await over_http(server, port, args.model, 2, args.max_tokens, stream=False)
        await run_direct(2)
        for n in args.clients:
            # streamed, whole and direct take turns (the server idles during direct runs), so all see the same load
            runs = [(await over_http(server, port, args.model, n, args.max_tokens),
                     await over_http(server, port, args.model, n, args.max_tokens, stream=False),
                     await run_direct(n)) for _ in range(args.repeat)]
            for run in runs:
                del run[1]["first_token_ms"]  # a whole answer has no first token to time
            streamed, whole, ref = (median_run([run[k] for run in runs]) for k in (0, 1, 2))
            ratios = {k: [run[i]["tokens_per_s"] / run[2]["tokens_per_s"] for run in runs]
                      for i, k in enumerate(("streamed", "whole"))}
            cpu = {k: [run[2]["cpu_us_per_token"] / run[i]["cpu_us_per_token"] for run in runs]
                   for i, k in enumerate(("streamed", "whole"))}
            out["runs"].append({"clients": n, "http_streamed": streamed, "http_whole": whole, "direct": ref,
                                "vs_direct": {k: statistics.median(v) for k, v in ratios.items()},
                                "vs_direct_cpu": {k: statistics.median(v) for k, v in cpu.items()},
                                "vs_direct_each": ratios, "vs_direct_cpu_each": cpu})
            print(f"{n} clients: {json.dumps(out['runs'][-1])}", file=sys.stderr, flush=True)
        if args.village_ticks:
            out["village"] = await loop.run_in_executor(engine_thread, villages, engine, port, args)
            print(f"village: {json.dumps(out['village'])}", file=sys.stderr, flush=True)
    finally:
        engine_thread.shutdown()
        server.terminate()
        server.wait()
    out["load_avg_after"] = os.getloadavg()[0]  # above cpus: other processes took CPU time meanwhile
    return out


def villages(engine, port: int, args) -> dict:
    """The village through OpenAIModel on the server and in process, taking turns: ticks/s, same events."""
    import tempfile

    from swarm.model import EngineModel
    from swarm.openai_model import OpenAIModel

    remote = OpenAIModel(f"http://127.0.0.1:{port}/v1", args.model, temperature=0)
    local = EngineModel(engine, temperature=0)
    seconds: dict[str, list[float]] = {"http": [], "in_process": []}
    logs = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.village_repeat):
            for name, model in (("http", remote), ("in_process", local)):
                took, logs[name] = village(model, args.village_ticks, Path(folder), name)
                seconds[name].append(took)
    remote.close()
    rate = {k: args.village_ticks / statistics.median(v) for k, v in seconds.items()}
    return {"ticks": args.village_ticks, "repeat": args.village_repeat, "seed": 7, "temperature": 0,
            "ticks_per_s": rate, "vs_in_process": rate["http"] / rate["in_process"], "seconds": seconds,
            "events": len(logs["http"]), "same_events": logs["http"] == logs["in_process"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="swarm-tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=15, help="runs per client count (the median is reported)")
    parser.add_argument("--kv-memory", default="1GiB", help="both engines' KV pool")
    parser.add_argument("--village-ticks", type=int, default=10, help="ticks of the village run both ways (0: none)")
    parser.add_argument("--village-repeat", type=int, default=3)
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    text = json.dumps(asyncio.run(main_async(args)), indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
