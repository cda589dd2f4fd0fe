"""Several `swarm serve` under one name against a real Mosquitto: each request is answered exactly once,
the requests spread over the servers, each server has its own status, and when one dies (kill -9) or its
link drops the others answer every request, those the broker had queued for it included."""

import asyncio
import collections
import json
import re
import signal
import sys

import msgspec
import pytest

from swarm.bus import LocalBus, Message, open_bus
from swarm.runtime import Engine, EngineConfig
from swarm.serve import Server, generate_topic, server_info_topic, server_status_topic, status_topic
from swarm.serve.command import server_bus
from swarm.serve.peers import Peers
from swarm.serve.protocol import Status, client_id

from .link import Link
from .test_serve import folder  # noqa: F401 (the module's model folder, a fixture)

NAME = "w"
REPLIES = "game/replies"


class Client:
    """Sends requests as a game would (JSON, MQTT v5 Response Topic) and counts every reply that comes back,
    so that a request answered twice shows."""

    def __init__(self, bus):
        self.bus = bus
        self.finals: collections.Counter[str] = collections.Counter()
        self.errors: list[dict] = []

    async def start(self) -> "Client":
        self._sub = await self.bus.subscribe(f"{REPLIES}/#", type=bytes)
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        async for msg in self._sub:
            reply = json.loads(msg.payload)
            if reply["done"]:
                self.finals[reply["id"]] += 1
                if "error" in reply:
                    self.errors.append(reply)

    async def send(self, ids: list[str]) -> None:
        for rid in ids:
            request = {"id": rid, "prompt": f"The guard {rid}", "max_tokens": 3, "seed": 1}
            await self.bus.publish(generate_topic(NAME), msgspec.json.encode(request), reply_to=f"{REPLIES}/{rid}",
                                   correlation=rid.encode())

    async def answered(self, ids: list[str], timeout: float = 60) -> None:
        """Wait until every request in `ids` has its final reply, then a little more for any second one."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(self.finals[rid] == 0 for rid in ids):
            missing = [rid for rid in ids if not self.finals[rid]]
            assert asyncio.get_running_loop().time() < deadline, f"never answered: {missing}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert {rid: self.finals[rid] for rid in ids} == {rid: 1 for rid in ids}  # exactly once each
        assert self.errors == []


async def retained(bus, topic: str) -> dict:
    sub = await bus.subscribe(topic, type=bytes)
    try:
        return json.loads((await sub.get(timeout=5)).payload)
    finally:
        await sub.close()


async def until(condition, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_live_server_with_the_smallest_id_takes_over_only_a_server_that_died():
    """On a local bus with a stand-in for `take_over`: who takes over what, and when."""
    calls: list[tuple] = []
    received: list[str] = []

    async def take_over(client, pattern, share, until):
        calls.append((client, pattern, share, until))
        return [Message(pattern, b"queued", reply_to="game/x")]

    async with LocalBus(format="json") as bus:
        bus.take_over = take_over
        await bus.publish(server_status_topic(NAME, "old"), Status(client="x", status="offline"), retain=True)
        peers = {sid: Peers(bus, NAME, sid, lambda msg, sid=sid: received.append(sid)) for sid in "bc"}
        for p in peers.values():
            await p.start()
        for sid in "bcd":
            await bus.publish(server_status_topic(NAME, sid), Status(client=client_id(NAME, sid), status="online"),
                              retain=True)
        # d stops cleanly (it says so while connected): nothing to take over
        await bus.publish(server_status_topic(NAME, "d"), Status(client="x", status="offline", stopped=True))
        await bus.publish(server_status_topic(NAME, "d"), Status(client="x", status="offline"))  # then its bus
        await until(lambda: peers["b"].online() == {"b", "c"})
        assert calls == []
        # c dies (its last will); the status names another client: the one taken over is c's all the same
        await bus.publish(server_status_topic(NAME, "c"), Status(client="the-simulation", status="offline"))
        await bus.publish(server_status_topic(NAME, "bad id"), Status(client="x", status="offline"))
        await until(lambda: received)
        assert calls == [(f"swarm-serve-{NAME}-c", generate_topic(NAME), f"swarm-serve-{NAME}",
                          server_status_topic(NAME, "c"))]
        assert received == ["b"]  # b, the smallest live id, serves what it took; the retained "old" is left alone
        for p in peers.values():
            await p.close()


def test_a_bad_server_id_is_one_line_before_anything_loads(capsys):
    from swarm.cli import main

    assert main(["serve", "--id", "gpu 0"]) == 2
    assert "--id: a server id is 1 to 64 letters, digits" in capsys.readouterr().err


@pytest.fixture
def engines(folder):  # noqa: F811 (the fixture imported above)
    return [Engine.from_pretrained(folder, config=EngineConfig(kv_cache_tokens=2048)) for _ in range(3)]


async def test_three_servers_under_one_name_answer_each_request_once(mosquitto, engines):
    buses = [server_bus(mosquitto.url, NAME, server_id) for server_id in "abc"]
    async with open_bus(mosquitto.url) as client_bus, buses[0], buses[1], buses[2]:
        servers = [await Server(engine, bus, NAME, server_id=bus_id).start()
                   for engine, bus, bus_id in zip(engines, buses, "abc", strict=True)]
        client = await Client(client_bus).start()
        ids = [f"r{i}" for i in range(30)]
        await client.send(ids)
        await client.answered(ids)
        taken = [server.requests for server in servers]
        assert sum(taken) == 30 and sum(1 for n in taken if n) > 1, taken  # once each, over several servers
        for server_id, bus in zip("abc", buses, strict=True):
            status = await retained(client_bus, server_status_topic(NAME, server_id))
            assert status == {"client": f"swarm-serve-{NAME}-{server_id}", "status": "online"} == {
                "client": bus.client_id, "status": "online"}
            assert (await retained(client_bus, server_info_topic(NAME, server_id)))["generate"] == generate_topic(NAME)
        assert (await retained(client_bus, status_topic(NAME)))["status"] == "online"
        for server in servers[:2]:  # the shared status stays online while a server is
            await server.close()
        assert (await retained(client_bus, status_topic(NAME)))["status"] == "online"
        await client.send(["last"])
        await client.answered(["last"])
        await until(lambda: servers[2]._peers.online() == {"c"})  # it has seen the others stop
        await servers[2].close()
        assert await buses[2].flush(5)  # its last words have reached the broker
        assert (await retained(client_bus, status_topic(NAME)))["status"] == "offline"  # the last one stopped


async def test_requests_queued_for_a_server_whose_link_is_down_are_answered_by_another(mosquitto, engines):
    """Mosquitto keeps giving a share of the requests to a member whose persistent session outlives its
    connection; the live server takes that session over and answers them, and the member that comes back
    serves again."""
    async with Link(mosquitto.port) as link, open_bus(mosquitto.url) as client_bus:
        away, steady = server_bus(link.url, NAME, "a"), server_bus(mosquitto.url, NAME, "b")
        async with away, steady, Server(engines[0], away, NAME, server_id="a") as a, \
                Server(engines[1], steady, NAME, server_id="b") as b:
            client = await Client(client_bus).start()
            await client.send(["warm-0", "warm-1"])
            await client.answered(["warm-0", "warm-1"])
            link.cut()
            ids = [f"away-{i}" for i in range(20)]
            await client.send(ids)  # at once: some are queued for a's session before b takes it over
            await client.answered(ids)
            assert not away.connected and a.requests + b.requests == 22
            assert (await retained(client_bus, server_status_topic(NAME, "a")))["status"] == "offline"
            link.restore()
            await until(lambda: away.connected)
            await until(lambda: a._peers.online() == {"a", "b"})
            before = a.requests
            ids = [f"back-{i}" for i in range(20)]
            await client.send(ids)
            await client.answered(ids)
            assert a.requests > before  # back in the group


def serve_command(url: str, model: str, server_id: str) -> list[str]:
    return [sys.executable, "-m", "swarm.cli", "serve", "--bus", url, "--name", NAME, "--id", server_id, "--model",
            model, "--kv-memory", "64MiB", "-v"]


class Process:
    """One `swarm serve` process; `requests` counts the requests its log says it answered."""

    def __init__(self, proc):
        self.proc = proc
        self.log: list[str] = []
        self.requests: collections.Counter[str] = collections.Counter()

    async def serving(self) -> None:
        while not self.log or "serving" not in self.log[-1]:
            line = await asyncio.wait_for(self.proc.stderr.readline(), 120)
            assert line, "swarm serve exited:\n" + "".join(self.log)
            self.log.append(line.decode())
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while line := (await self.proc.stderr.readline()).decode():
            self.log.append(line)
            if found := re.search(r"request '([^']+)'", line):
                self.requests[found[1]] += 1


@pytest.mark.slow
async def test_a_server_killed_with_sigkill_leaves_the_others_answering_every_request(mosquitto, folder):  # noqa: F811
    procs = [Process(await asyncio.create_subprocess_exec(*serve_command(mosquitto.url, str(folder), server_id),
                                                          stderr=asyncio.subprocess.PIPE)) for server_id in "abc"]
    try:
        await asyncio.gather(*(p.serving() for p in procs))
        async with open_bus(mosquitto.url) as client_bus:
            client = await Client(client_bus).start()
            ids = [f"r{i}" for i in range(30)]
            await client.send(ids)
            await client.answered(ids)
            counts = [sum(p.requests.values()) for p in procs]
            assert sum(counts) == 30 and sum(1 for n in counts if n) > 1, counts

            procs[0].proc.send_signal(signal.SIGKILL)  # a: the one that would take sessions over
            await procs[0].proc.wait()
            ids = [f"after-{i}" for i in range(30)]
            await client.send(ids)  # at once: the broker queues some for a's session before it is taken over
            await client.answered(ids)
            survivors = collections.Counter()
            for p in procs[1:]:
                survivors.update(p.requests)
            assert all(survivors[rid] == 1 for rid in ids)
            assert (await retained(client_bus, server_status_topic(NAME, "a")))["status"] == "offline"
            for server_id in "bc":
                assert (await retained(client_bus, server_status_topic(NAME, server_id)))["status"] == "online"
            assert (await retained(client_bus, status_topic(NAME)))["status"] == "online"
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.proc.wait(), 30)
            except asyncio.TimeoutError:
                p.proc.kill()
                await p.proc.wait()
