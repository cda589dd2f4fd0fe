"""`swarm serve --http` for the tests: an `HttpServer` on a free loopback port, run by an event loop on a thread of
its own, so tests talk to it with blocking clients (the official `openai` client, `http.client`) as an outside
program would."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from typing import Any

import openai

from swarm.serve.http import HttpServer


class ServedHttp:
    """`HttpServer(engine, model, port=0, **options)`, started; `close()` stops it and its loop."""

    def __init__(self, engine, model: str = "swarm-tiny", **options: Any):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="http-test-loop", daemon=True)
        self.thread.start()
        self.http: HttpServer = self.run(HttpServer(engine, model, port=0, **options).start())
        self.port, self.url = self.http.port, self.http.url

    def run(self, coro, timeout: float = 120) -> Any:
        """Run `coro` on the server's loop and return its value."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn) -> Any:
        """`fn(engine)` on the engine thread, between two steps."""
        return self.run(self.http.worker.call(fn))

    def stats(self) -> dict:
        return self.call(lambda engine: engine.stats())

    def client(self, api_key: str = "unused", **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, **options)

    def close(self, grace: float = 1.0) -> None:
        self.run(self.http.close(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def request(port: int, method: str, path: str, body: bytes | dict | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, Any, http.client.HTTPMessage]:
    """One plain HTTP request: (status, the body as JSON when it is JSON else text, the headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        text = raw.decode("utf-8", "replace")
        is_json = response.getheader("content-type", "").startswith("application/json")
        return response.status, json.loads(text) if is_json else text, response.msg
    finally:
        conn.close()


def open_stream(port: int, path: str, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A streamed request, its response's headers read; read events with `next_event`, drop with conn.close()."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, json.dumps({**body, "stream": True}).encode(), {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def next_event(response: http.client.HTTPResponse) -> str:
    """The data of the next server-sent event."""
    while True:
        line = response.readline().decode()
        if not line:
            raise EOFError("the stream ended")
        if line.startswith("data: "):
            return line[len("data: ") :].rstrip("\n")
