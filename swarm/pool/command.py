"""`swarm worker --bus URL --pool NAME [--model M]`: a runtime worker of a pool, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from swarm.engine_options import add_dtype_option, add_engine_options, engine_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="serve a pool's simulation turns over an MQTT broker (swarm run --model "
                       "mqtt://host:port/POOL)",
                       description="Decide the turns simulations send to pool NAME; start several on one or many "
                       "machines, and each persona stays with one of them.")
    p.add_argument("--bus", default="mqtt://127.0.0.1:1883", help="the broker: mqtt://[user[:password]@]host:port "
                   "or mqtts://...?ca=CA.pem (TLS); the password from SWARM_MQTT_PASSWORD when the URL has none")
    p.add_argument("--pool", required=True, help="the pool's name (a simulation uses mqtt://host:port/NAME)")
    p.add_argument("--model", default="swarm-tiny",
                   help="swarm-tiny (default), a local Hugging Face model folder or a .gguf file")
    p.add_argument("--id", help="this worker's id in the pool (default: host name and process id)")
    p.add_argument("--capacity", type=int, help="turns it takes at once (default: the engine's max_seqs)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    add_dtype_option(p)
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swarm.bus.url import broker_url
    from swarm.pool.worker import default_worker_id
    from swarm.runtime import Engine

    broker_url(args.bus, "swarm worker --bus")
    if args.capacity is not None and args.capacity < 1:
        raise ValueError(f"--capacity is 1 or more turns, got {args.capacity}")
    logging.basicConfig(level=logging.INFO, format="swarm worker: %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    engine = Engine.from_pretrained(args.model, config=engine_config(args), device=args.device,
                                    dtype=args.dtype)
    print(f"swarm worker: loaded {args.model} in {time.perf_counter() - t0:.1f}s; {engine.memory_summary()}",
          file=sys.stderr)
    asyncio.run(work(engine, args.bus, args.pool, args.id or default_worker_id(), args.model, args.capacity))
    return 0


async def work(engine, url: str, pool: str, id: str, model: str, capacity: int | None = None) -> None:
    """Serve pool `pool` as worker `id` until SIGINT or SIGTERM."""
    from swarm.bus import open_bus
    from swarm.bus.url import redact
    from swarm.pool.protocol import worker_topic
    from swarm.pool.worker import PoolWorker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bus = open_bus(url, client_id=f"swarm-worker-{pool}-{id}", presence=worker_topic(pool, id, "status"))
    async with bus, PoolWorker(engine, bus, pool, id, model, capacity) as worker:
        print(f"swarm worker: {id} serving pool {pool!r} on {redact(url)} ({worker.capacity} turns at once)",
              file=sys.stderr, flush=True)
        await stop.wait()
    print(f"swarm worker: {id} stopped after {worker.turns} turns", file=sys.stderr, flush=True)
