"""`swarm serve` against a real Mosquitto: MQTT v5 clients, a v3.1.1 client with reply_to, and the Node.js
example client (examples/clients/node) talking to the `swarm serve` command."""

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import msgspec
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from swarm.bus import open_bus
from swarm.runtime import Engine, EngineConfig
from swarm.runtime.random_model import tiny_config, write_random_model
from swarm.serve import Server, status_topic

NODE_CLIENT = Path(__file__).parents[2] / "examples" / "clients" / "node"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = write_random_model(tmp_path_factory.mktemp("m"), tiny_config(vocab_size=384))
    return Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=8192))


def client(mosquitto, v5: bool = True) -> aiomqtt.Client:
    """A bare MQTT client, as a game engine in another language would have."""
    version = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    return aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=version)


def v5_request(reply_to: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData = reply_to, correlation
    return props


async def replies_until_done(messages, timeout: float = 20) -> list[aiomqtt.Message]:
    got = []
    while not got or not json.loads(got[-1].payload)["done"]:
        got.append(await asyncio.wait_for(anext(messages), timeout))
    return got


async def test_v5_clients_get_their_own_streams_with_their_correlation(mosquitto, engine):
    async with open_bus(mosquitto.url, format="json", presence=status_topic("v")) as bus, Server(engine, bus, "v"):
        async def game(n: int) -> list[aiomqtt.Message]:
            async with client(mosquitto) as c:
                await c.subscribe(f"game/{n}/replies", qos=1)
                request = {"id": n, "persona": "Mira", "prompt": f"The guard {n}", "max_tokens": 8, "seed": n}
                await c.publish("swarm/v/runtime/generate", json.dumps(request), qos=1,
                                properties=v5_request(f"game/{n}/replies", b"corr-%d" % n))
                return await replies_until_done(c.messages)

        results = await asyncio.gather(*(game(n) for n in range(6)))
        for n, got in enumerate(results):
            assert all(m.properties.CorrelationData == b"corr-%d" % n for m in got)
            replies = [json.loads(m.payload) for m in got]
            assert all(r["id"] == n for r in replies) and replies[-1]["done"]
            assert "".join(r["token"] for r in replies[:-1]) == replies[-1]["text"]

        async with client(mosquitto) as c:  # msgpack in, msgpack out; and the retained presence, in JSON
            await c.subscribe("game/mp", qos=1)
            await c.subscribe(status_topic("v"), qos=1)
            status = await asyncio.wait_for(anext(c.messages), 5)
            assert json.loads(status.payload) == {"client": bus.client_id, "status": "online"} and status.retain
            await c.publish("swarm/v/runtime/generate", msgspec.msgpack.encode({"id": "m", "prompt": "x"}), qos=1,
                            properties=v5_request("game/mp", b"m"))
            last = msgspec.msgpack.decode((await asyncio.wait_for(anext(c.messages), 20)).payload)
            while not last["done"]:
                last = msgspec.msgpack.decode((await asyncio.wait_for(anext(c.messages), 20)).payload)
            assert last["id"] == "m" and last["finish_reason"] in ("stop", "length")


async def test_a_v3_client_names_its_reply_topic_in_the_body(mosquitto, engine):
    async with open_bus(mosquitto.url) as bus, Server(engine, bus, "v"), client(mosquitto, v5=False) as old:
        await old.subscribe("game/old/replies", qos=1)
        for request in ({"id": "a", "prompt": "The guard", "max_tokens": 6, "reply_to": "game/old/replies"},
                        {"id": "b", "reply_to": "game/old/replies"}):
            await old.publish("swarm/v/runtime/generate", json.dumps(request), qos=1)
        replies = [json.loads(m.payload) for m in await replies_until_done(old.messages)]
        assert {r["id"] for r in replies} <= {"a", "b"}
        if replies[-1]["id"] == "b":  # the bad request's error can come before the first request is done
            replies += [json.loads(m.payload) for m in await replies_until_done(old.messages)]
        finals = {r["id"]: r for r in replies if r["done"]}
        assert finals["b"]["code"] == "bad_request" and "exactly one of `prompt` and `messages`" in finals["b"]["error"]
        streamed = "".join(r["token"] for r in replies if r["id"] == "a" and not r["done"])
        assert streamed == finals["a"]["text"] and finals["a"]["finish_reason"] in ("stop", "length")


def _node_ready() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not installed (the example needs Node.js 18 or later; .ci/run installs it)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 18:
        return f"the example needs Node.js 18 or later, this is {version}"
    if not (NODE_CLIENT / "node_modules" / "mqtt").is_dir():
        return "the example's npm packages are not installed: npm ci --prefix examples/clients/node"
    return None


async def run(*command: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_node_client_asks_swarm_serve_for_a_line(mosquitto):
    why = _node_ready()
    if why:
        pytest.skip(why)
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "swarm.cli", "serve", "--bus", mosquitto.url, "--name", "village", "-v",
        stderr=asyncio.subprocess.PIPE)
    log = []
    try:
        while not log or "serving" not in log[-1]:
            line = await asyncio.wait_for(serve.stderr.readline(), 60)
            assert line, "swarm serve exited:\n" + "".join(log)
            log.append(line.decode())
        ask = ["node", str(NODE_CLIENT / "ask.mjs"), "--url", mosquitto.url, "--name", "village", "--seed", "1",
               "--max-tokens", "120"]
        code, out, err = await run(*ask, "A traveller asks for news. What do you say?")
        assert code == 0, err
        streamed, last = out.rstrip("\n").rsplit("\n", 1)
        done = json.loads(last)
        assert done["done"] is True and done["finish_reason"] == "stop" and streamed == done["text"]
        assert done["value"]["type"] == "say" and done["value"] == json.loads(streamed)
        assert done["prompt_tokens"] > 20 and done["completion_tokens"] > 3

        code, out, err = await run(*ask, "--adapter", "innkeeper", "Hello?")
        assert code == 1 and "error: unknown_adapter: unknown adapter 'innkeeper'; this server has: engineer" in err

        serve.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(serve.stderr.read(), 30)).decode()
        assert await serve.wait() == 0
        log.append(rest)
        assert "request '" in rest and "stopped after 2 requests" in rest
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
    async with client(mosquitto) as c:  # the retained status says so
        await c.subscribe(status_topic("village"), qos=1)
        assert json.loads((await asyncio.wait_for(anext(c.messages), 5)).payload)["status"] == "offline"
