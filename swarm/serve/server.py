"""The runtime served over the bus: requests on `swarm/<name>/runtime/generate`, replies streamed back.

    engine = Engine.from_pretrained("swarm-tiny")
    async with server_bus("mqtt://127.0.0.1:1883", "village", "a") as bus:
        async with Server(engine, bus, "village", server_id="a"):
            await asyncio.Event().wait()  # serve until cancelled

The bus is the caller's (`swarm.serve.command.server_bus` makes one whose presence is the server's status,
under its own client id); the server owns its subscription, the engine thread, and the requests in
flight. Any number of servers may serve one name: each request goes to one of them. Nothing a client
sends stops a server: every request it takes gets exactly one final reply, `Done` or `Error`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from swarm.bus import Bus, BusError, Message, Subscription
from swarm.bus.ratelog import RateLimitedLog
from swarm.serve.job import Job
from swarm.serve.peers import Peers
from swarm.serve.protocol import (
    BadRequest,
    Error,
    Info,
    Reply,
    Status,
    check_reply_prefix,
    check_reply_topic,
    check_server_id,
    default_server_id,
    encode,
    generate_topic,
    info_topic,
    read_request,
    server_info_topic,
    server_status_topic,
    share_group,
    status_topic,
)
from swarm.serve.worker import EngineWorker

if TYPE_CHECKING:
    from swarm.runtime import Engine

log = logging.getLogger("swarm.serve")

SHUTTING_DOWN = "the server is shutting down and takes no new requests"
SHUT_DOWN = "the server shut down before this request finished"


class Server:
    """Serves `engine` to the clients of `bus` under `name`; `model` labels it in the info message.

    Servers under one name share its requests (a share group: each request goes to one of them). Each
    has an id, `server_id` (by default `<host>-<pid>`: give each server in one process its own), and its
    own retained status and info topics. On a bus made for it (`server_bus`) its status is also the bus's
    presence, so the broker says offline if the process dies, and a live server under the name then takes
    over the requests queued for it (`Peers`). The shared status topic reads online while any server
    under the name does, as far as they know.

    Replies go only to reply topics under `reply_prefix` (None: any topic outside `swarm/` and the `$`
    topics; see `check_reply_topic`); a request naming another one is dropped with a (rate limited) warning.
    """

    def __init__(self, engine: Engine, bus: Bus, name: str, model: str | None = None, *,
                 reply_prefix: str | None = None, server_id: str | None = None):
        self.engine, self.bus, self.name = engine, bus, name
        self.id = check_server_id(server_id) if server_id is not None else default_server_id()
        self.model = model or engine.source or "engine"
        self.topic = generate_topic(name)
        self.status_topic = server_status_topic(name, self.id)
        self.reply_prefix = check_reply_prefix(reply_prefix)
        self.dropped = RateLimitedLog(log, "requests dropped")  # .count: requests no reply could go to
        self.accepting = False
        self.requests = 0  # received, well-formed or not
        self._worker = EngineWorker(engine, self._publish)
        self._peers = Peers(bus, name, self.id, self._receive)
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Server:
        """Subscribe, publish the info and status messages and start the engine thread; then requests are
        served."""
        self._sub = await self.bus.subscribe(self.topic, type=bytes, share=share_group(self.name))
        info = Info(model=self.model, adapters=sorted(self.engine.adapters()), max_context=self.engine.max_context,
                    generate=self.topic)
        # In the bus's format, as presence is.
        await self.bus.publish(server_info_topic(self.name, self.id), info, retain=True)
        await self.bus.publish(info_topic(self.name), info, retain=True)
        await self._peers.start()
        self._worker.start()
        self.accepting = True
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"swarm-serve-{self.name}")
        await self._announce("online")
        return self

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking requests (new ones get a shutting_down error), give those in flight `grace` seconds
        to finish, fail the rest with shutting_down, then unsubscribe and announce it."""
        if self._sub is None:
            return
        await self._peers.close()  # requests it is taking over from a server that went away are served too
        self.accepting = False
        if not await self._worker.drain(grace):
            log.info("%d requests still running after %g s: failing them", self._worker.pending, grace)
        await self._worker.close(SHUT_DOWN)
        await self._sub.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._sub = self._reader = None
        await self._announce("offline")
        self.dropped.flush()

    async def _announce(self, status: str) -> None:
        """Publish this server's status and the shared one: online when it starts; offline (stopped) when it
        stops, the shared one only when it was the last server online under the name (as far as it knows)."""
        message = Status(client=self.bus.client_id, status=status, stopped=status == "offline")
        await self.bus.publish(self.status_topic, message, retain=True)
        if status == "online" or not self._peers.online() - {self.id}:
            await self.bus.publish(status_topic(self.name), message, retain=True)

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Requests taken and not finished."""
        return self._worker.pending

    @property
    def worker(self) -> EngineWorker:
        """The engine's worker, which another front end may share (`swarm serve --bus ... --http ...`): the
        server starts it, and `close` drains and closes it, that front end's requests too."""
        return self._worker

    async def _read(self) -> None:
        async for msg in self._sub:
            try:
                self._receive(msg)
            except Exception:  # nothing a client sends may stop the reader
                log.exception("failed to handle a request on %s", msg.topic)

    def _receive(self, msg: Message) -> None:
        self.requests += 1
        format, request = read_request(msg.payload)
        # MQTT v5 clients name the reply topic in the Response Topic property; others in the body.
        topic, correlation = msg.reply_to, msg.correlation
        if topic is None:
            topic = request.reply_to
        try:
            check_reply_topic(topic, self.reply_prefix)
        except ValueError as e:  # nowhere to send an error either
            self.dropped.warn("dropped a request on %s: %s", msg.topic, e)
            return
        if isinstance(request, BadRequest):
            error = Error(id=request.id, error=request.error, code="bad_request")
            self._publish_now(topic, correlation, format, error)
        elif not self.accepting:
            error = Error(id=request.id, error=SHUTTING_DOWN, code="shutting_down")
            self._publish_now(topic, correlation, format, error)
        else:
            self._worker.add(Job(request, format, topic, correlation))

    async def _publish(self, job: Job, reply: Reply) -> None:
        try:
            await self.bus.publish(job.topic, encode(job.format, reply), correlation=job.correlation)
        except BusError as e:  # e.g. a reply over the bus's max_payload: the client gets an error instead
            log.warning("cannot send a reply to request %r on %s: %s", job.id, job.topic, e)
            if reply.done and not isinstance(reply, Error):
                self._publish_now(job.topic, job.correlation, job.format,
                                  job.error("internal", f"the reply could not be sent: {e}"))

    def _publish_now(self, topic: str, correlation: bytes | None, format: str, reply: Reply) -> None:
        try:
            self.bus.publish_nowait(topic, encode(format, reply), correlation=correlation)
        except BusError as e:
            log.warning("cannot send a reply on %s: %s", topic, e)
