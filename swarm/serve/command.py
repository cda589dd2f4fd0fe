"""`swarm serve --model M --bus mqtt://host:port --name NAME`: the runtime over MQTT until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from swarm.engine_options import add_engine_options, engine_config

SESSION_EXPIRY = 60  # seconds: a reconnect takes a few; a request older than a minute has no one waiting


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the runtime over an MQTT broker to programs in any language",
                       description="Serve generation requests on swarm/NAME/runtime/generate (docs/protocol.md).")
    p.add_argument("--model", default="swarm-tiny", help="swarm-tiny (default) or a local Hugging Face model folder")
    p.add_argument("--bus", default="mqtt://127.0.0.1:1883", help="the broker: mqtt://[user[:password]@]host:port "
                   "or mqtts://...?ca=CA.pem (TLS); the password from SWARM_MQTT_PASSWORD when the URL has none")
    p.add_argument("--name", default="default", help="the name in the topics swarm/NAME/runtime/...; any number of "
                   "servers may share one: each request goes to one of them")
    p.add_argument("--id", dest="server_id", metavar="ID",
                   help="this server's id among those under one name, in its status topic and MQTT client id "
                   "(default HOST-PID); give a restarted server its old id to take its session back")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="also serve this PEFT LoRA adapter folder under NAME (repeatable)")
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds requests in flight get to finish when the server is stopped")
    p.add_argument("--reply-prefix", metavar="PREFIX",
                   help="publish replies only to reply topics under PREFIX, e.g. game/replies (default: any "
                   "topic outside swarm/ and the $ topics, so a request cannot reach an agent's inbox)")
    p.add_argument("--session-expiry", type=int, default=SESSION_EXPIRY, metavar="SECONDS",
                   help="how long the broker keeps queueing requests for this server while its connection is "
                   f"down; they are served once it is back (default {SESSION_EXPIRY}; 0: requests sent "
                   "meanwhile are lost)")
    p.add_argument("-v", "--verbose", action="store_true", help="log one line per request")
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swarm.bus.url import broker_url
    from swarm.runtime import Engine
    from swarm.serve.protocol import check_reply_prefix, check_server_id, default_server_id

    broker_url(args.bus, "swarm serve --bus")
    check_reply_prefix(args.reply_prefix)
    try:
        server_id = check_server_id(args.server_id) if args.server_id is not None else default_server_id()
    except ValueError as e:
        raise ValueError(f"--id: {e}") from None
    if args.session_expiry < 0:
        raise ValueError(f"--session-expiry is seconds >= 0, got {args.session_expiry}")
    adapters = [_adapter(spec) for spec in args.adapter]
    _check_device(args.device)
    logging.basicConfig(level=logging.INFO, format="swarm serve: %(message)s", stream=sys.stderr)
    if args.verbose:
        logging.getLogger("swarm.serve").setLevel(logging.DEBUG)
    t0 = time.perf_counter()
    engine = Engine.from_pretrained(args.model, config=engine_config(args), device=args.device)
    for name, path in adapters:
        engine.add_adapter(name, path)
    print(f"swarm serve: loaded {args.model} in {time.perf_counter() - t0:.1f}s; {engine.memory_summary()}",
          file=sys.stderr)
    asyncio.run(serve(engine, args.bus, args.name, args.model, args.grace, reply_prefix=args.reply_prefix,
                      session_expiry=args.session_expiry, server_id=server_id))
    return 0


async def serve(engine, url: str, name: str, model: str | None = None, grace: float = 5.0, *,
                reply_prefix: str | None = None, session_expiry: int = SESSION_EXPIRY,
                server_id: str | None = None) -> None:
    """Serve `engine` on the broker at `url` as server `server_id` under `name` until SIGINT or SIGTERM, then
    shut down cleanly."""
    from swarm.bus.url import redact
    from swarm.serve.server import Server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bus = server_bus(url, name, server_id, session_expiry)
    async with bus, Server(engine, bus, name, model, reply_prefix=reply_prefix, server_id=server_id) as server:
        cfg = engine.config
        print(f"swarm serve: serving {server.model} ({cfg.model_type}, {len(engine.adapters())} adapters) "
              f"on {redact(url)} as {name!r} (server {server.id}): requests on {server.topic}",
              file=sys.stderr, flush=True)
        await stop.wait()
        print(f"swarm serve: stopping ({server.pending} requests in flight)", file=sys.stderr, flush=True)
        await server.close(grace)
    print(f"swarm serve: stopped after {server.requests} requests", file=sys.stderr, flush=True)


def server_bus(url: str, name: str, server_id: str | None = None, session_expiry: int = SESSION_EXPIRY):
    """The bus `swarm serve --name NAME --id ID` serves on: presence on the server's own status topic, and a
    session the broker keeps for `session_expiry` seconds under the client id `swarm-serve-NAME-ID`, so
    requests sent while the connection is down are served after it reconnects (or, if the server is gone
    for good, by another server under the name). `server_id` defaults to `default_server_id()`."""
    from swarm.bus import open_bus
    from swarm.bus.base import url_options
    from swarm.serve.protocol import check_server_id, client_id, default_server_id, server_status_topic

    server_id = check_server_id(server_id) if server_id is not None else default_server_id()
    # The bus's own payloads (presence) go out as JSON unless the URL asks otherwise: any client reads them.
    return open_bus(url, format=url_options(url).get("format", "json"), presence=server_status_topic(name, server_id),
                    client_id=client_id(name, server_id), session_expiry=session_expiry)


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device: cpu, cuda, cuda:1, ...") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch sees no CUDA GPU")


def _adapter(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--adapter takes NAME=PATH, got {spec!r}")
    return name, path
