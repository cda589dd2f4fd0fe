"""MqttBus: the bus over an MQTT v5 broker (Mosquitto, EMQX), through aiomqtt.

One background task owns the connection. It connects, announces presence, (re)subscribes every live
subscription, then runs a reader and a few publish pumps until the connection drops; after a drop it
reconnects with backoff. Publishes go through a bounded outbox, so a broker restart loses nothing:
messages published meanwhile, and those the broker had not acknowledged, are sent after reconnecting.

Each broker subscription carries an MQTT v5 subscription identifier. Brokers send one copy of a message
per matching subscription, so overlapping patterns (`a/#` and `a/+/b`) would otherwise deliver twice;
the identifier says exactly which local subscriptions a copy is for.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from swarm.bus.base import MAX_PAYLOAD, MAX_QUEUE, Bus, BusError, Subscription, _ReplyInbox, register, url_options
from swarm.bus.topics import matches

log = logging.getLogger("swarm.bus")

_BACKOFF = (0.05, 2.0)  # first and longest wait between connection attempts, seconds
_STABLE = 10.0  # a session that lasted this long resets the backoff; shorter ones (a flapping link) do not

Subscriber = Subscription | _ReplyInbox
# An outgoing message: (sequence number, topic, payload, qos, retain, reply_to, correlation).
Outgoing = tuple[int, str, bytes, int, bool, "str | None", "bytes | None"]


class _Route:
    """One broker subscription: a pattern, its current subscription identifier, its local subscribers."""

    __slots__ = ("pattern", "sid", "subs")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.sid = 0
        self.subs: list[Subscriber] = []


@register("mqtt")
class MqttBus(Bus):
    """The bus over an MQTT v5 broker. Publishes are QoS 1 unless asked otherwise.

    `presence` is published "online" after every (re)connect, and "offline" on `close()` or, as the
    broker's last will, when the process dies or the connection is lost. `max_buffer` bounds the outbox
    (oldest dropped past it while disconnected; `publish` waits instead while connected). `inflight` is
    how many QoS 1/2 publishes may await their acknowledgement at once; keep it within the broker's
    receive maximum (Mosquitto: 20). `client_id` must be unique on the broker: a second client with the
    same id takes the session over, and the two keep disconnecting each other.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, format: str = "msgpack",
                 client_id: str | None = None, presence: str | None = None, max_payload: int = MAX_PAYLOAD,
                 max_queue: int = MAX_QUEUE, max_buffer: int = 10_000, connect_timeout: float = 5.0,
                 keepalive: int = 30, inflight: int = 20) -> None:
        super().__init__(format=format, client_id=client_id, presence=presence, max_payload=max_payload,
                         max_queue=max_queue)
        if max_buffer <= 0 or inflight <= 0 or connect_timeout <= 0:
            raise ValueError("max_buffer, inflight and connect_timeout must be positive")
        self.host = host
        self.port = port
        self.max_buffer = max_buffer
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.inflight = inflight
        self._outbox: deque[Outgoing] = deque()
        self._unacked: dict[int, Outgoing] = {}
        self._seq = itertools.count()
        self._routes: dict[str, _Route] = {}
        self._by_sid: dict[int, _Route] = {}
        self._sids = itertools.count(1)
        self._sub_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # the outbox has something
        self._progress = asyncio.Event()  # a publish was acknowledged, or the connection ended
        self._up = asyncio.Event()  # a session is established
        self._stop = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None  # resolves when the current session ends
        self._client: aiomqtt.Client | None = None  # set while a session is established
        self._task: asyncio.Task[None] | None = None
        self._sessions = 0
        self._last_error: str | None = None
        self._overflowing = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttBus:
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.username or parts.password:
            raise ValueError(f"expected mqtt://host:port[?format=json], got {url!r}")
        return cls(parts.hostname or "127.0.0.1", parts.port or 1883, **{**url_options(url), **options})

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<MqttBus {self.client_id} at {self.address} {state} format={self.format}>"

    @property
    def address(self) -> str:
        """host:port of the broker."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether a session with the broker is established right now."""
        return self._client is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters as for every bus, plus `buffered` (not yet acknowledged) and `reconnects`."""
        return {**self._stats, "buffered": len(self._outbox) + len(self._unacked),
                "reconnects": max(self._sessions - 1, 0)}

    async def connect(self) -> None:
        """Connect, retrying until `connect_timeout`; raises BusError naming the broker and the last error."""
        self._check_open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt-bus-{self.client_id}")
        try:
            await asyncio.wait_for(self._up.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            if self._sessions == 0:  # never got through: stop trying, the caller decides what next
                task, self._task = self._task, None
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            reason = self._last_error or f"no answer within {self.connect_timeout:g} s"
            raise BusError(f"cannot reach the MQTT broker at {self.address}: {reason}") from None

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until the broker has acknowledged everything published so far (while connected)."""
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + timeout
        while self._outbox or self._unacked:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._task is None:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), None if remaining == math.inf else remaining)
            except asyncio.TimeoutError:
                return False
        return True

    async def close(self) -> None:
        """Send what is buffered (up to `connect_timeout`), mark presence offline, and disconnect cleanly."""
        if self.closed:
            return
        if self.connected:
            if self.presence:
                self._send(self.presence, self._status("offline"), True, 1, None, None)
            await self.flush(self.connect_timeout)
        await super().close()
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.connect_timeout)
            except asyncio.TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        unsent = len(self._outbox) + len(self._unacked)
        if unsent:
            log.warning("closed the bus to %s with %d messages never acknowledged by the broker", self.address, unsent)

    # The connection.

    async def _run(self) -> None:
        delay = _BACKOFF[0]
        while not self._stop.is_set():
            client = aiomqtt.Client(
                self.host, self.port, identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5,
                will=self._will(), keepalive=self.keepalive, timeout=self.connect_timeout,
                max_inflight_messages=self.inflight,
            )
            client.pending_calls_threshold = 10 * self.inflight + 100  # our pumps keep many calls pending
            sessions, started = self._sessions, time.monotonic()
            try:
                async with client:
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                self._connection_failed(exc, lost=self._sessions > sessions)
            except Exception as exc:  # a bug must not end the bus: log it and reconnect
                log.exception("the MQTT connection to %s failed", self.address)
                self._connection_failed(exc, lost=self._sessions > sessions)
            if self._stop.is_set():
                break
            if time.monotonic() - started > _STABLE:
                delay = _BACKOFF[0]  # that connection had been fine: retry quickly
            try:  # back off, with jitter so that many clients do not reconnect in lockstep
                await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.8, 1.2))
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, _BACKOFF[1])

    async def _session(self, client: aiomqtt.Client) -> None:
        """Serve one connection until it drops (raises MqttError) or the bus is closed (returns)."""
        loop = asyncio.get_running_loop()
        self._lost = lost = loop.create_future()
        reader = loop.create_task(self._read(client))
        work = loop.create_task(self._start(client))
        stop = loop.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({reader, work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._client = None
            self._up.clear()
            lost.set_result(None)
            for task in (reader, work, stop):
                task.cancel()
            await asyncio.gather(reader, work, stop, return_exceptions=True)
            # Messages the broker never acknowledged go back to the front of the outbox, in order.
            self._outbox.extendleft(sorted(self._unacked.values(), reverse=True))
            self._unacked.clear()
            self._progress.set()
        for task in done:
            if task is not stop and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _start(self, client: aiomqtt.Client) -> None:
        """Announce presence, subscribe every live subscription, then publish from the outbox forever."""
        if self.presence:
            await client.publish(self.presence, self._status("online"), qos=1, retain=True)
        async with self._sub_lock:
            self._by_sid.clear()
            for route in list(self._routes.values()):
                refused = await self._subscribe(client, route, route.subs)
                if refused:
                    log.error("%s", refused)
            self._client = client
        self._sessions += 1
        if self._sessions > 1:
            log.info("reconnected to the MQTT broker at %s; %d messages to send", self.address, len(self._outbox))
        self._overflowing = False
        self._up.set()
        pumps = [asyncio.get_running_loop().create_task(self._pump(client)) for _ in range(self.inflight)]
        try:
            await asyncio.gather(*pumps)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, client: aiomqtt.Client) -> None:
        # Several pumps run at once so that `inflight` publishes await their PUBACK together. Each takes the
        # next message and hands it to paho before its first await, so the wire order is the outbox order.
        outbox, unacked = self._outbox, self._unacked
        while True:
            if not outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = outbox.popleft()
            seq, topic, data, qos, retain, reply_to, correlation = item
            unacked[seq] = item
            await client.publish(topic, data, qos=qos, retain=retain, properties=_publish_properties(
                reply_to, correlation), timeout=math.inf)  # a dead connection ends the session instead
            del unacked[seq]
            self._progress.set()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                self._dispatch(message)
            except Exception:  # nothing a peer sends may stop the reader
                log.exception("failed to dispatch a message on %s", message.topic)

    def _connection_failed(self, exc: BaseException, lost: bool) -> None:
        # Warn once per outage (when an established session is lost), not on every attempt to reconnect.
        cause = exc.__cause__ or exc  # aiomqtt's "Disconnected during message iteration" wraps the reason
        self._last_error = str(cause) or cause.__class__.__name__
        if lost and not self._stop.is_set():
            log.warning("lost the MQTT broker at %s (%s); reconnecting", self.address, self._last_error)
        else:
            log.debug("cannot reach the MQTT broker at %s: %s", self.address, self._last_error)

    # Publishing and receiving.

    def _send(self, topic: str, data: bytes, retain: bool, qos: int, reply_to: str | None,
              correlation: bytes | None) -> None:
        if len(self._outbox) >= self.max_buffer:
            self._outbox.popleft()
            self._stats["dropped"] += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning("the outbox to %s is full (max_buffer=%d): dropping the oldest messages",
                            self.address, self.max_buffer)
        self._outbox.append((next(self._seq), topic, data, qos, retain, reply_to, correlation))
        self._wake.set()

    async def _flow(self) -> None:
        # While connected the broker is keeping up, more or less: wait for room rather than drop.
        while self._client is not None and len(self._outbox) >= self.max_buffer:
            self._progress.clear()
            await self._progress.wait()

    def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        data = message.payload
        if not isinstance(data, bytes):
            data = b"" if data is None else str(data).encode()
        if len(data) > self.max_payload:
            self._drop(topic, f"the payload is {len(data)} bytes, over max_payload={self.max_payload}")
            return
        sids = reply_to = correlation = None
        props = message.properties
        if props is not None:
            sids = getattr(props, "SubscriptionIdentifier", None)
            reply_to = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
        retain = message.retain
        if sids:
            for sid in sids:
                route = self._by_sid.get(sid)
                if route is None:
                    continue
                for sub in route.subs:
                    # A retained copy answers one SUBSCRIBE: it is for the subscribers that joined with it.
                    if not retain or sub._sid == sid:
                        sub._deliver(topic, data, retain, reply_to, correlation)
        else:  # a broker without subscription identifiers: match the patterns here
            for route in list(self._routes.values()):
                if matches(route.pattern, topic):
                    for sub in route.subs:
                        sub._deliver(topic, data, retain, reply_to, correlation)

    # Subscriptions.

    async def _attach(self, sub: Subscriber) -> None:
        async with self._sub_lock:
            route = self._routes.get(sub.pattern)
            if route is None:
                route = self._routes[sub.pattern] = _Route(sub.pattern)
            route.subs.append(sub)
            if self._client is None:
                return  # the next session subscribes it
            refused = await self._subscribe(self._client, route, [sub])
            if refused:
                route.subs.remove(sub)
                if not route.subs:
                    del self._routes[sub.pattern]
                raise BusError(refused)

    async def _detach(self, sub: Subscription) -> None:
        async with self._sub_lock:
            route = self._routes.get(sub.pattern)
            if route is None or sub not in route.subs:
                return
            route.subs.remove(sub)
            if route.subs:
                return
            del self._routes[sub.pattern]
            for sid in [sid for sid, r in self._by_sid.items() if r is route]:
                del self._by_sid[sid]
            if self._client is not None:
                try:
                    await self._until_lost(self._client.unsubscribe(sub.pattern))
                except aiomqtt.MqttError as exc:
                    log.debug("unsubscribing from %r failed: %s", sub.pattern, exc)

    async def _subscribe(self, client: aiomqtt.Client, route: _Route, joining: list[Subscriber]) -> str | None:
        """(Re)subscribe `route` under a fresh identifier; the broker replays retained messages to `joining`.

        Returns why the broker refused the subscription, or None. Connection trouble is not a refusal:
        the next session subscribes again.
        """
        # Subscribing again to a pattern replaces the broker's subscription (identifier included) and
        # replays its retained messages, which go only to the subscribers that joined with this identifier.
        route.sid = sid = next(self._sids)
        for sub in joining:
            sub._sid = sid
        self._by_sid[sid] = route
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = sid
        try:
            codes = await self._until_lost(client.subscribe(route.pattern, qos=1, properties=props))
        except aiomqtt.MqttError as exc:
            log.debug("subscribing to %r failed: %s", route.pattern, exc)
            return None
        refused = [code for code in codes or () if getattr(code, "is_failure", False)]
        if refused:
            return f"the MQTT broker at {self.address} refused the subscription to {route.pattern!r}: {refused[0]}"
        return None

    async def _until_lost(self, call: Any) -> Any:
        """Await a broker round trip, or give up (None) when the connection drops first."""
        task = asyncio.ensure_future(call)
        lost = self._lost
        if lost is None:
            return await task
        done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    # Presence.

    def _will(self) -> aiomqtt.Will | None:
        if not self.presence:
            return None
        return aiomqtt.Will(self.presence, self._status("offline"), qos=1, retain=True)


def _publish_properties(reply_to: str | None, correlation: bytes | None) -> Properties | None:
    if reply_to is None and correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    if reply_to is not None:
        props.ResponseTopic = reply_to
    if correlation is not None:
        props.CorrelationData = correlation
    return props
