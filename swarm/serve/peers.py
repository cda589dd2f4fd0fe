"""The servers under one name, as their retained status topics tell: who is online, and who takes over the
requests the broker queued for one that went away.

Each request goes to one server of the name's share group. While a server's connection is down its
persistent session stays in the group, and Mosquitto 2.0 keeps queueing that server's share of the requests
there; were the server dead, they would wait until the session expires and then be lost. So when a server's
status turns offline (its last will, or a clean stop), one live server, the one with the smallest id, takes
that session over (`MqttBus.take_over`): it ends the session and serves what was queued in it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from swarm.bus import Bus, Message, Subscription, topics
from swarm.serve.protocol import (
    Status,
    check_server_id,
    client_id,
    generate_topic,
    read_status,
    server_status_topic,
    share_group,
)

log = logging.getLogger("swarm.serve")


class Peers:
    """Watches the status of every server under `name` for server `server_id`; `receive(msg)` is handed each
    request taken over from a server that went offline (only over a bus that can take sessions over)."""

    def __init__(self, bus: Bus, name: str, server_id: str, receive: Callable[[Message], None]):
        self.bus, self.name, self.server_id = bus, name, server_id
        self.status: dict[str, Status] = {}  # server id -> its latest status
        self._receive = receive
        self._sub: Subscription | None = None
        self._watch: asyncio.Task[None] | None = None
        self._taking: set[asyncio.Task[None]] = set()

    def online(self) -> set[str]:
        """The ids of the servers whose status reads online, this one's included once it is."""
        return {server_id for server_id, status in self.status.items() if status.status == "online"}

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(server_status_topic(self.name, topics.ANY), type=bytes)
        self._watch = asyncio.get_running_loop().create_task(self._read(), name=f"swarm-serve-peers-{self.name}")

    async def close(self) -> None:
        """Stop watching; take-overs under way finish first (what they take is served)."""
        if self._sub is None:
            return
        await self._sub.close()
        self._watch.cancel()
        await asyncio.gather(self._watch, *self._taking, return_exceptions=True)
        self._sub = self._watch = None

    async def _read(self) -> None:
        async for msg in self._sub:
            server_id = topics.levels(msg.topic)[-2]
            try:
                check_server_id(server_id)
            except ValueError:  # no server publishes there
                log.debug("ignored a status on %s: not a server id", msg.topic)
                continue
            status = read_status(msg.payload)
            if status is None:
                if msg.payload:  # (an empty payload clears a retained status: nothing to say)
                    log.debug("ignored a status on %s that does not read as one", msg.topic)
                self.status.pop(server_id, None)
                continue
            before, self.status[server_id] = self.status.get(server_id), status
            if self._lost(server_id, before, status, msg.retain) and self._first():
                task = asyncio.get_running_loop().create_task(self._take_over(server_id))
                self._taking.add(task)
                task.add_done_callback(self._taking.discard)

    def _lost(self, server_id: str, before: Status | None, status: Status, retained: bool) -> bool:
        """Whether this status says that another server went away without stopping: its last will, seen live
        (a status retained from long ago is a session long expired) after it was online. A server that stops
        says so first (`stopped`), while still connected: taking its session over then would take its
        connection away, and it has left the group already."""
        if server_id == self.server_id or retained or status.status != "offline" or status.stopped:
            return False
        return before is None or before.status == "online"

    def _first(self) -> bool:
        """Whether this server is the live one with the smallest id: the one that takes sessions over."""
        return self.server_id == min(self.online() | {self.server_id})

    async def _take_over(self, server_id: str) -> None:
        take_over = getattr(self.bus, "take_over", None)
        if take_over is None:  # a bus without sessions queues nothing for a server that is gone
            return
        status = self.status.get(server_id)
        if status is None or status.status != "offline":
            return  # it came back (its session is its own again), or its status was cleared
        # The client id follows from the server id, whatever the status says: a forged status must not
        # make this server connect as some other client (the simulation, say) and end its session.
        taken = await take_over(client_id(self.name, server_id), generate_topic(self.name), share_group(self.name),
                                until=server_status_topic(self.name, server_id))
        if taken:
            log.info("server %s went offline: serving the %d requests queued for it", server_id, len(taken))
        for msg in taken:
            self._receive(msg)
