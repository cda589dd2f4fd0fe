"""`swarm serve --http` starting and stopping: the command line, SIGTERM with a request in flight, a server that
stops taking requests, and the MQTT and HTTP front ends sharing one engine in one process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading

import pytest

from swarm.bus import open_bus
from swarm.bus.broker import free_port
from swarm.runtime import Engine, EngineConfig, SamplingParams
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.serve import Server, status_topic
from swarm.serve.http import HttpServer

from .http_serving import ServedHttp, next_event, open_stream, request
from .serving import ask

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "The guard"}]
# at least 150 characters: fits max_tokens=400 (one that could not is refused at submit), outlasts a short grace
ENDLESS = {"type": "json_schema", "json_schema": {"name": "long", "schema": {
    "type": "object", "properties": {"s": {"type": "string", "minLength": 150}}, "required": ["s"]}}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384, max_position_embeddings=512))


@pytest.fixture
def engine(folder):
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=4096, kv_tier_memory=0))


def test_a_server_that_stops_taking_requests_says_so_and_fails_what_outlives_its_grace(engine):
    served = ServedHttp(engine, "tiny")
    conn, response = open_stream(served.port, CHAT, {"model": "tiny", "messages": HI, "max_tokens": 400,
                                                     "response_format": ENDLESS})
    next_event(response), next_event(response)  # the role, then text: it runs
    served.http.stop_taking()
    status, answer, _ = request(served.port, "POST", CHAT, {"model": "tiny", "messages": HI})
    assert (status, answer["error"]["code"]) == (503, "shutting_down")
    assert request(served.port, "GET", "/health")[:2] == (503, {"status": "shutting down"})
    served.close(grace=0.2)  # the stream outlives its grace: it ends with an error event, then [DONE]
    events = []
    while (event := next_event(response)) != "[DONE]":
        events.append(json.loads(event))
    assert events[-1]["error"]["code"] == "shutting_down" and "shut down" in events[-1]["error"]["message"]
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        request(served.port, "GET", "/health")


async def test_bus_and_http_share_one_engine_worker(engine):
    async with open_bus("local", presence=status_topic("v")) as bus:
        server = await Server(engine, bus, "v", model="tiny").start()
        web = await HttpServer(engine, "tiny", port=0, worker=server.worker).start()
        assert web.worker is server.worker
        over_http = asyncio.to_thread(request, web.port, "POST", "/v1/completions",
                                      {"model": "tiny", "prompt": "The guard", "max_tokens": 6, "temperature": 0})
        over_bus = ask(bus, "v", {"prompt": "The guard", "max_tokens": 6, "temperature": 0})
        (status, answer, _), replies = await asyncio.gather(over_http, over_bus)
        expected = engine.generate("The guard", SamplingParams(max_tokens=6, temperature=0))[0].text
        assert status == 200 and answer["choices"][0]["text"] == replies[-1]["text"] == expected
        web.stop_taking()
        await server.close(grace=1)  # drains the worker both share
        await web.close()


def test_swarm_serve_http_stops_cleanly_on_sigterm_with_a_request_in_flight(folder):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "swarm.cli", "serve", "--http", f"127.0.0.1:{port}", "--model",
                             str(folder), "--kv-memory", "64MiB", "--grace", "0.3"], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while "OpenAI API at" not in (line := proc.stderr.readline()):
            assert line, "".join(lines)
            lines.append(line)
        assert f"http://127.0.0.1:{port}/v1 (no API key)" in line
        assert request(port, "GET", "/v1/models")[1]["data"][0]["id"] == str(folder)
        answer = {}
        body = {"model": str(folder), "messages": HI, "max_tokens": 400, "response_format": ENDLESS}
        thread = threading.Thread(target=lambda: answer.update(r=request(port, "POST", CHAT, body)))
        thread.start()
        while "swarm_requests_running 1" not in request(port, "GET", "/metrics")[1]:
            pass
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        status, error, _ = answer["r"]
        assert (status, error["error"]["code"]) == (503, "shutting_down")
        assert proc.wait(30) == 0
        rest = proc.stderr.read()
        assert "stopping (1 requests in flight)" in rest and "stopped after" in rest and "Traceback" not in rest
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("argv, message", [
    (["--http", "8000"], "--http takes HOST:PORT"),
    (["--http", "127.0.0.1:99999"], "--http takes HOST:PORT"),
    (["--http", "127.0.0.1:80x"], "--http takes HOST:PORT"),
])
def test_swarm_serve_refuses_a_bad_http_address_before_loading_anything(argv, message, capsys):
    from swarm.cli import main

    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err


def test_swarm_serve_says_when_its_http_port_is_taken(folder, capsys):
    from swarm.cli import main

    with socket_on_a_port() as port:
        assert main(["serve", "--http", f"127.0.0.1:{port}", "--model", str(folder), "--kv-memory", "64MiB"]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


class socket_on_a_port:
    """A listening socket on a free loopback port, for as long as the block runs."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()
