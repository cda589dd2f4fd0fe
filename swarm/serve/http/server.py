"""`OpenAIApp` served over HTTP by uvicorn, inside the caller's event loop.

    engine = Engine.from_pretrained("swarm-tiny")
    async with HttpServer(engine, "swarm-tiny", port=0) as http:   # port 0: a free port, then see http.port
        ...  # OpenAI(base_url=f"http://127.0.0.1:{http.port}/v1", api_key="-")

The engine runs on an `EngineWorker`: the server's own, or (`worker=`) one it shares with another front end,
say `swarm serve --bus`'s `Server`, whose owner then drains and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from swarm.serve.http.app import OpenAIApp
from swarm.serve.worker import EngineWorker

if TYPE_CHECKING:
    from swarm.runtime import Engine

log = logging.getLogger("swarm.serve")

SHUT_DOWN = "the server shut down before this request finished"
CLOSE_TIMEOUT = 5  # seconds connections get to end once the requests on them are done or failed


class HttpServer:
    """Serves `engine` as model `model` (and its adapters under their names) on `host:port` until closed."""

    def __init__(self, engine: Engine, model: str, host: str = "127.0.0.1", port: int = 8000, *,
                 api_key: str | None = None, worker: EngineWorker | None = None):
        self.host, self.requested_port = host, port
        self._owns_worker = worker is None
        self.worker = worker or EngineWorker(engine)
        self.app = OpenAIApp(self.worker, model, api_key)
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None  # the port it listens on, once started

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take (…/v1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> HttpServer:
        """Listen (ValueError if it cannot), start the worker if it is the server's own, and serve."""
        sock = listen(self.host, self.requested_port)
        self.port = sock.getsockname()[1]
        if self._owns_worker:
            self.worker.start()
        # lifespan off: the app has no startup work; log_config None: the process's logging stays as it is
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=CLOSE_TIMEOUT)
        self._server = _Uvicorn(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]), name="swarm-http")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the HTTP server stopped as it started")
            await asyncio.sleep(0.01)
        return self

    def stop_taking(self) -> None:
        """New requests get a 503 from now on; those in flight go on."""
        self.app.accepting = False

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking requests, give those in flight `grace` seconds (when the worker is the server's own; a
        shared worker's owner drains it), fail the rest with a 503 or an error event, and stop listening."""
        if self._task is None:
            return
        self.stop_taking()
        if self._owns_worker:
            if not await self.worker.drain(grace):
                log.info("%d requests still running after %g s: failing them", self.worker.pending, grace)
            await self.worker.close(SHUT_DOWN)
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def __aenter__(self) -> HttpServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers of its own: `swarm serve` stops every front end together on SIGINT or
    SIGTERM, and a program embedding the server decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ValueError saying why it cannot be had."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        return socket.create_server(address, family=family)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def parse_address(text: str) -> tuple[str, int]:
    """"HOST:PORT" (or "[IPv6]:PORT") -> (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--http takes HOST:PORT, e.g. 127.0.0.1:8000 or [::1]:8000 (0.0.0.0:8000 for every "
                         f"interface), got {text!r}")
    return host, int(port)
