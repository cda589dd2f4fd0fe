"""`swarm serve` over MQTT: throughput and latency for N concurrent clients, against the engine direct.

    .venv/bin/python benchmarks/serve.py                          # swarm-tiny, 1, 8 and 32 clients
    .venv/bin/python benchmarks/serve.py --clients 4 16 --max-tokens 48 --model path/to/hf_folder

Starts Mosquitto on loopback and `swarm serve` as a subprocess (its own process, as in production: the
clients here do not share its interpreter). N bare MQTT v5 clients (aiomqtt, one connection each, as N
game processes would be) each send one chat request at once; each measures the time to its first Token
and to its Done. Then the same N requests run on an engine in this process with no bus at all, as one
batch; the two take turns, `--repeat` times. Reported per N (the median run): requests/s and generated
tokens/s both ways, `vs_direct` (bus serving / direct tokens/s: what the bus, the JSON and the per-step
streaming cost), and first-token and total latency over the bus. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from swarm.bus.broker import Mosquitto
from swarm.serve.job import Job
from swarm.serve.protocol import GenerateRequest, generate_topic

NAME = "bench"
LINES = ["A traveller asks for news.", "The bread is late again.", "Who was at the mill last night?",
         "A stranger wants a room.", "The guard asks about the fire."]


def request(i: int, max_tokens: int) -> dict:
    return {"id": i, "persona": {"name": f"npc{i % 8}", "role": "villager", "traits": "curious"},
            "messages": [{"role": "user", "content": LINES[i % len(LINES)]}], "max_tokens": max_tokens,
            "temperature": 0.7, "seed": i}


async def one_client(port: int, i: int, max_tokens: int, start: asyncio.Event) -> dict:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5,
                              identifier=f"bench-client-{i}") as c:
        topic = f"bench/replies/{i}"
        await c.subscribe(topic, qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic, props.CorrelationData = topic, str(i).encode()
        await start.wait()
        t0 = time.perf_counter()
        await c.publish(generate_topic(NAME), json.dumps(request(i, max_tokens)), qos=1, properties=props)
        first = None
        async for message in c.messages:
            reply = json.loads(message.payload)
            if first is None:
                first = time.perf_counter() - t0
            if reply["done"]:
                if "error" in reply:
                    raise RuntimeError(f"request {i} failed: {reply}")
                return {"first_s": first, "total_s": time.perf_counter() - t0, "tokens": reply["completion_tokens"]}
    raise RuntimeError(f"client {i} lost its connection")


async def over_the_bus(port: int, clients: int, max_tokens: int) -> dict:
    start = asyncio.Event()
    tasks = [asyncio.ensure_future(one_client(port, i, max_tokens, start)) for i in range(clients)]
    await asyncio.sleep(0.5 + 0.02 * clients)  # every client connected and subscribed
    t0 = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in results)
    first = sorted(r["first_s"] for r in results)
    total = sorted(r["total_s"] for r in results)
    return {"requests_per_s": clients / wall, "tokens_per_s": tokens / wall, "tokens": tokens,
            "first_token_ms": {"p50": 1000 * statistics.median(first), "max": 1000 * first[-1]},
            "total_ms": {"p50": 1000 * statistics.median(total), "max": 1000 * total[-1]}}


def direct(engine, clients: int, max_tokens: int) -> dict:
    """The same requests on the engine in this process: no bus, no JSON. Call it on the engine thread."""
    jobs = [Job(msgspec.convert(request(i, max_tokens), GenerateRequest), "json", "-", None) for i in range(clients)]
    t0 = time.perf_counter()
    for job in jobs:
        job.submit(engine)
    while not all(job.handle.done for job in jobs):
        engine.step()
    wall = time.perf_counter() - t0
    tokens = sum(len(job.handle.result().token_ids) for job in jobs)
    return {"requests_per_s": clients / wall, "tokens_per_s": tokens / wall, "tokens": tokens}


async def start_server(url: str, model: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "swarm.cli", "serve", "--bus", url, "--name",
                                                NAME, "--model", model, stderr=asyncio.subprocess.PIPE)
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 120)).decode()
        if not line:
            raise RuntimeError("swarm serve exited before serving")
        if "serving" in line:
            return proc


async def main_async(args) -> dict:
    from swarm.runtime import Engine

    broker = Mosquitto(max_queued_messages=0).start()
    server = await start_server(broker.url, args.model)
    engine = Engine.from_pretrained(args.model)
    # The direct runs go on a thread of their own too, as the server's engine does: on a busy 2-core machine,
    # torch steps in a fresh process's main thread were measured 5-10x slower than on a worker thread.
    engine_thread = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    async def run_direct(n: int) -> dict:
        return await loop.run_in_executor(engine_thread, direct, engine, n, args.max_tokens)

    out = {"model": args.model, "max_tokens": args.max_tokens, "repeat": args.repeat, "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "python": platform.python_version(),
           "load_avg_before": os.getloadavg()[0], "runs": []}
    try:
        await over_the_bus(broker.port, 2, args.max_tokens)  # warm-up: first-step costs, the prefix cache
        await run_direct(2)
        for n in args.clients:
            # bus and direct take turns (the server idles meanwhile), so both see the same machine load
            pairs = [(await over_the_bus(broker.port, n, args.max_tokens), await run_direct(n))
                     for _ in range(args.repeat)]
            bus, ref = (median_run([pair[k] for pair in pairs]) for k in (0, 1))
            ratio = statistics.median(b["tokens_per_s"] / d["tokens_per_s"] for b, d in pairs)
            out["runs"].append({"clients": n, "bus": bus, "direct": ref, "vs_direct": ratio})
    finally:
        engine_thread.shutdown()
        server.terminate()
        await server.wait()
        broker.close()
    out["load_avg_after"] = os.getloadavg()[0]  # above cpu_count: other processes took CPU time meanwhile
    return out


def median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (its latencies belong to it)."""
    return sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="swarm-tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="runs per client count (the median is reported)")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
