"""`swarm serve --model M [--bus mqtt://host:port --name NAME] [--http HOST:PORT]`: the runtime over MQTT, over
the OpenAI HTTP API, or both on one engine, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from swarm.engine_options import add_dtype_option, add_engine_options, engine_config

SESSION_EXPIRY = 60  # seconds: a reconnect takes a few; a request older than a minute has no one waiting
DEFAULT_BUS = "mqtt://127.0.0.1:1883"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the runtime to programs in any language: over an MQTT broker, or the "
                       "OpenAI HTTP API",
                       description="Serve generation requests on swarm/NAME/runtime/generate (docs/protocol.md), "
                       "and/or as an OpenAI-compatible HTTP server (--http, docs/http.md); both share one engine.")
    p.add_argument("--model", default="swarm-tiny",
                   help="swarm-tiny (default), a local Hugging Face model folder or a .gguf file")
    p.add_argument("--bus", help="the broker: mqtt://[user[:password]@]host:port or mqtts://...?ca=CA.pem (TLS); the "
                   f"password from SWARM_MQTT_PASSWORD when the URL has none (default {DEFAULT_BUS}, unless --http "
                   "is given alone)")
    p.add_argument("--http", metavar="HOST:PORT", help="also (or, without --bus, only) serve the OpenAI API on "
                   "HOST:PORT, e.g. 127.0.0.1:8000 (0.0.0.0:8000: every interface); needs the serve extra")
    p.add_argument("--api-key", default=os.environ.get("SWARM_API_KEY") or None,
                   help="with --http: the key clients must send (Authorization: Bearer KEY); default SWARM_API_KEY, "
                   "which keeps it out of the process list")
    p.add_argument("--served-model-name", metavar="NAME",
                   help="with --http: the base model's id in the API (default: --model as given); each adapter's "
                   "id is its name")
    p.add_argument("--name", default="default", help="the name in the topics swarm/NAME/runtime/...; any number of "
                   "servers may share one: each request goes to one of them")
    p.add_argument("--id", dest="server_id", metavar="ID",
                   help="this server's id among those under one name, in its status topic and MQTT client id "
                   "(default HOST-PID); give a restarted server its old id to take its session back")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    add_dtype_option(p)
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

    http = _http_address(args.http)
    bus = args.bus if args.bus is not None or http is not None else DEFAULT_BUS
    if bus is not None:
        broker_url(bus, "swarm serve --bus")
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
    engine = Engine.from_pretrained(args.model, config=engine_config(args), device=args.device,
                                    dtype=args.dtype)
    for name, path in adapters:
        engine.add_adapter(name, path)
    print(f"swarm serve: loaded {args.model} in {time.perf_counter() - t0:.1f}s; {engine.memory_summary()}",
          file=sys.stderr)
    asyncio.run(serve(engine, bus, args.name, args.model, args.grace, reply_prefix=args.reply_prefix,
                      session_expiry=args.session_expiry, server_id=server_id, http=http, api_key=args.api_key,
                      served_model_name=args.served_model_name))
    return 0


async def serve(engine, url: str | None, name: str, model: str | None = None, grace: float = 5.0, *,
                reply_prefix: str | None = None, session_expiry: int = SESSION_EXPIRY,
                server_id: str | None = None, http: tuple[str, int] | None = None, api_key: str | None = None,
                served_model_name: str | None = None) -> None:
    """Serve `engine` on the broker at `url` (None: no broker) as server `server_id` under `name`, and on `http`
    (host, port) as the OpenAI API, until SIGINT or SIGTERM, then shut down cleanly: both stop taking requests,
    those in flight get `grace` seconds, the rest are failed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        server = web = None
        if url is not None:
            server = await _bus_server(stack, engine, url, name, model, reply_prefix, session_expiry, server_id)
        if http is not None:
            from swarm.serve.http import HttpServer

            web = HttpServer(engine, served_model_name or model or engine.source or "engine", *http, api_key=api_key,
                             worker=None if server is None else server.worker)
            await web.start()
            stack.push_async_callback(web.close, grace)
            print(f"swarm serve: serving {web.app.model} ({len(engine.adapters())} adapters as their own models) "
                  f"over the OpenAI API at {web.url}{'' if api_key else ' (no API key)'}", file=sys.stderr,
                  flush=True)
        await stop.wait()
        pending = (server or web).worker.pending
        print(f"swarm serve: stopping ({pending} requests in flight)", file=sys.stderr, flush=True)
        if web is not None:
            web.stop_taking()
        if server is not None:
            await server.close(grace)  # drains the shared worker: the HTTP requests too
    counts = ([f"{server.requests} requests" + (" over the bus" if web else "")] if server else []) + (
        [f"{sum(web.app.answered.values())} requests over HTTP"] if web else [])
    print(f"swarm serve: stopped after {' and '.join(counts)}", file=sys.stderr, flush=True)


async def _bus_server(stack: contextlib.AsyncExitStack, engine, url: str, name: str, model: str | None,
                      reply_prefix: str | None, session_expiry: int, server_id: str | None):
    """The MQTT front end, started; `stack` closes it and its bus."""
    from swarm.bus.url import redact
    from swarm.serve.server import Server

    bus = await stack.enter_async_context(server_bus(url, name, server_id, session_expiry))
    server = await stack.enter_async_context(Server(engine, bus, name, model, reply_prefix=reply_prefix,
                                                    server_id=server_id))
    print(f"swarm serve: serving {server.model} ({engine.config.model_type}, {len(engine.adapters())} adapters) "
          f"on {redact(url)} as {name!r} (server {server.id}): requests on {server.topic}", file=sys.stderr,
          flush=True)
    return server


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


def _http_address(text: str | None) -> tuple[str, int] | None:
    """--http's (host, port), checked before anything loads; ValueError if it is wrong or the extra is missing."""
    if text is None:
        return None
    try:
        from swarm.serve.http import parse_address
    except ImportError as e:
        raise ValueError(f"--http needs the serve extra ({e.name} is not installed): pip install 'swarm-sim[serve]'") \
            from None
    return parse_address(text)


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
