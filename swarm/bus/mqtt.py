"""MqttBus: the bus over an MQTT v5 broker (Mosquitto, EMQX), through aiomqtt.

One background task owns the connection. It connects, announces presence, (re)subscribes every live
subscription, then runs a reader and a few publish pumps until the connection drops; after a drop it
reconnects with backoff. Publishes go through a bounded outbox, so a broker restart loses nothing:
messages published meanwhile, and those the broker had not acknowledged, are sent after reconnecting.

Each broker subscription carries an MQTT v5 subscription identifier. Brokers send one copy of a message
per matching subscription, so overlapping patterns (`a/#` and `a/+/b`) would otherwise deliver twice;
the identifier says exactly which local subscriptions a copy is for. A shared subscription
(`$share/<group>/<pattern>`) delivers on the plain topic; its identifier says it is the group's copy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from swarm.bus.base import (
    MAX_PAYLOAD,
    MAX_QUEUE,
    Bus,
    BusError,
    Message,
    ShareGroup,
    Subscription,
    _ReplyInbox,
    register,
)
from swarm.bus.topics import matches, shared, validate_pattern, validate_share, validate_topic
from swarm.bus.url import parse_bus_url

log = logging.getLogger("swarm.bus")

_BACKOFF = (0.05, 2.0)  # first and longest wait between connection attempts, seconds
_STABLE = 10.0  # a session that lasted this long resets the backoff; shorter ones (a flapping link) do not
CLOSE_TIMEOUT = 30.0  # seconds close() waits for the broker to take what is buffered
_PATIENCE = 1.0  # seconds close() waits before it says that it is waiting

Subscriber = Subscription | _ReplyInbox
# An outgoing message: (sequence number, topic, payload, qos, retain, reply_to, correlation).
Outgoing = tuple[int, str, bytes, int, bool, "str | None", "bytes | None"]


class _Route:
    """One broker subscription: its topic filter, its current subscription identifier, its local subscribers
    (for a shared subscription, `group` hands each message to one of them)."""

    __slots__ = ("filter", "group", "pattern", "sid", "subs")

    def __init__(self, pattern: str, share: str | None = None) -> None:
        self.pattern = pattern
        self.filter = pattern if share is None else shared(share, pattern)
        self.sid = 0
        self.subs: list[Subscriber] = []
        self.group = None if share is None else ShareGroup(pattern, share, self.subs)

    def deliver(self, topic: str, data: bytes, retain: bool, reply_to: str | None, correlation: bytes | None,
                sid: int | None = None) -> None:
        if self.group is not None:
            self.group._deliver(topic, data, retain, reply_to, correlation)
            return
        for sub in self.subs:
            # A retained copy answers one SUBSCRIBE: it is for the subscribers that joined with it.
            if not retain or sid is None or sub._sid == sid:
                sub._deliver(topic, data, retain, reply_to, correlation)


@register("mqtt", "mqtts")
class MqttBus(Bus):
    """The bus over an MQTT v5 broker. Publishes are QoS 1 unless asked otherwise.

    `presence` is published "online" after every (re)connect, and "offline" on `close()` or, as the
    broker's last will, when the process dies or the connection is lost. `max_buffer` bounds the outbox
    (oldest dropped past it while disconnected; `publish` waits instead while connected). `inflight` is
    how many QoS 1/2 publishes may await their acknowledgement at once; keep it within the broker's
    receive maximum (Mosquitto: 20). `client_id` must be unique on the broker: a second client with the
    same id takes the session over, and the two keep disconnecting each other.

    `username` and `password` authenticate; `tls=True` connects over TLS, verifying the broker against
    `ca` (a PEM file; the system's CA store without one), with `cert` and `key` as a client certificate.
    A broker that refuses the credentials or fails the TLS handshake at the first `connect()` raises
    BusError at once (no retrying what cannot work); a connection lost later is retried as always.

    `session_expiry` > 0 keeps the session on the broker for that many seconds after a connection drops:
    after reconnecting, the messages published meanwhile to this bus's subscriptions (QoS 1) are
    delivered. Give it a stable `client_id`, the session's name. `close()` waits up to `close_timeout`
    seconds for the broker to take what is still buffered, reconnecting if need be.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, format: str = "msgpack",
                 client_id: str | None = None, presence: str | None = None, max_payload: int = MAX_PAYLOAD,
                 max_queue: int = MAX_QUEUE, max_buffer: int = 10_000, connect_timeout: float = 5.0,
                 keepalive: int = 30, inflight: int = 20, username: str | None = None, password: str | None = None,
                 tls: bool = False, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 session_expiry: int = 0,
                 close_timeout: float = CLOSE_TIMEOUT) -> None:
        super().__init__(format=format, client_id=client_id, presence=presence, max_payload=max_payload,
                         max_queue=max_queue)
        if max_buffer <= 0 or inflight <= 0 or connect_timeout <= 0 or close_timeout <= 0:
            raise ValueError("max_buffer, inflight, connect_timeout and close_timeout must be positive")
        if password is not None and username is None:
            raise ValueError("an MQTT password needs a username")
        if session_expiry < 0:
            raise ValueError(f"session_expiry is seconds >= 0, got {session_expiry}")
        self.host = host
        self.port = port
        self.username = username
        self._password = password  # kept out of every repr, log line and error message
        self._tls = _tls_context(ca, cert, key) if tls else None
        if self._tls is None and (ca or cert or key):
            raise ValueError("ca, cert and key are TLS settings: pass tls=True (mqtts://) with them")
        self.max_buffer = max_buffer
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.inflight = inflight
        self.session_expiry = session_expiry
        self.close_timeout = close_timeout
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
        self._refused: str | None = None  # why the broker will not take this client (first connect only)
        self._refusing = asyncio.Event()  # set with _refused
        self._overflowing = False
        self._overflowed = 0  # messages dropped from a full outbox: never sent

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttBus:
        parts = parse_bus_url(url)
        return cls(parts.host, parts.port, **{"username": parts.user, "password": parts.password, "tls": parts.tls,
                                              **parts.options, **options})

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
        return {**self._stats, "buffered": self._buffered(),
                "reconnects": max(self._sessions - 1, 0)}

    async def connect(self) -> None:
        """Connect, retrying until `connect_timeout`; raises BusError naming the broker and the last error."""
        self._check_open()
        if self._task is None:
            self._refused = None
            self._refusing.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt-bus-{self.client_id}")
        try:
            await asyncio.wait_for(self._first_session(), self.connect_timeout)
        except asyncio.TimeoutError:
            if self._sessions == 0:  # never got through: stop trying, the caller decides what next
                task, self._task = self._task, None
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            reason = self._last_error or f"no answer within {self.connect_timeout:g} s"
            raise BusError(f"cannot reach the MQTT broker at {self.address}: {reason}") from None

    async def _first_session(self) -> None:
        """Return once a session is up; raise BusError when the broker refused this client (or the
        connection task ended) before one was."""
        task = self._task
        waits = [asyncio.ensure_future(event.wait()) for event in (self._up, self._refusing)]
        try:
            await asyncio.wait({*waits, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._up.is_set():
            return
        self._task = None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise BusError(self._refused or f"stopped connecting to the MQTT broker at {self.address}")

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
        """Send what is buffered and disconnect cleanly, presence marked offline.

        Messages not yet acknowledged are sent first, waiting up to `close_timeout` seconds for the broker
        if the connection is down (the bus keeps reconnecting meanwhile). Raises BusError, after closing,
        when some were never delivered: the broker stayed away, or a full outbox dropped some earlier.
        """
        if self.closed:
            return
        if self._task is not None:  # connected once: there is a session to end, and maybe messages to send
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.close_timeout
            if not await self.flush(min(_PATIENCE, self.close_timeout)) and loop.time() < deadline:
                log.warning("waiting up to %.0f s more for the MQTT broker at %s to take the %d messages not "
                            "delivered yet (%s)", deadline - loop.time(), self.address, self._buffered(),
                            "connected" if self.connected else "it is away: reconnecting")
                await self.flush(deadline - loop.time())
            if self.presence and self.connected:  # (while disconnected, the last will says it)
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
        unsent = self._buffered()
        if unsent or self._overflowed:
            why = [f"{unsent} were still buffered when the broker did not take them within "
                   f"close_timeout={self.close_timeout:g} s"] if unsent else []
            if self._overflowed:
                why.append(f"{self._overflowed} were dropped earlier from the full outbox (max_buffer="
                           f"{self.max_buffer}) while the broker was away")
            raise BusError(f"{unsent + self._overflowed} messages published on the bus to {self.address} were "
                           f"never delivered: {'; '.join(why)}")

    def _buffered(self) -> int:
        return len(self._outbox) + len(self._unacked)

    # The connection.

    async def _run(self) -> None:
        delay = _BACKOFF[0]
        while not self._stop.is_set():
            client = self._new_client(self.client_id, will=self._will(), **self._session_options())
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
            if self._stop.is_set() or self._refused:
                break
            if time.monotonic() - started > _STABLE:
                delay = _BACKOFF[0]  # that connection had been fine: retry quickly
            try:  # back off, with jitter so that many clients do not reconnect in lockstep
                await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.8, 1.2))
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, _BACKOFF[1])

    def _new_client(self, identifier: str, **options: Any) -> aiomqtt.Client:
        """A client of this bus's broker, with its credentials and TLS, connecting as `identifier`."""
        return aiomqtt.Client(
            self.host, self.port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=self.keepalive, timeout=self.connect_timeout, max_inflight_messages=self.inflight,
            username=self.username, password=self._password, tls_context=self._tls,
            logger=_PahoLog(self._tls_failed, asyncio.get_running_loop()), **options,
        )

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
            # The old identifiers stay known: a resumed session's queued messages carry them.
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
        refusal = self._refusal(exc) if self._sessions == 0 else None
        if refusal:  # at the first connect, a refusal is final: retrying cannot change it
            self._refuse(refusal)
            return
        if lost and not self._stop.is_set():
            log.warning("lost the MQTT broker at %s (%s); reconnecting", self.address, self._last_error)
        else:
            log.debug("cannot reach the MQTT broker at %s: %s", self.address, self._last_error)

    def _refusal(self, exc: BaseException) -> str | None:
        """Why the broker will not take this client as configured (credentials refused, TLS handshake
        failed), or None for trouble that retrying may cure (broker down, busy, a network hiccup)."""
        code = getattr(exc, "rc", None)
        code = getattr(code, "value", code)
        if isinstance(exc, MqttConnectError) and code in _REFUSED:
            if self.username is None:
                return (f"the MQTT broker at {self.address} refused a connection without credentials ({exc}): "
                        "give mqtt://user@host and the password in SWARM_MQTT_PASSWORD")
            return f"the MQTT broker at {self.address} refused the credentials for user {self.username!r} ({exc})"
        tls = _ssl_error(exc)
        return None if tls is None else self._tls_refusal(tls)

    def _tls_refusal(self, error: ssl.SSLError) -> str:
        reason = getattr(error, "verify_message", None) or error.reason or str(error)
        if getattr(error, "verify_code", None) == _HOSTNAME_MISMATCH:
            hint = f"the broker's certificate must name {self.host}"
        elif isinstance(error, ssl.SSLCertVerificationError):
            hint = "is ca= the broker's CA?"
        elif "CERTIFICATE_REQUIRED" in reason:
            hint = "the broker asks for a client certificate: give cert= and key="
        else:
            hint = "is this the broker's TLS port, and does its CA sign cert=?"
        return f"TLS handshake with {self.address} failed: {reason} ({hint})"

    def _tls_failed(self, error: ssl.SSLError) -> bool:
        """paho met a TLS error it only logs (TLS 1.3 brokers refuse a client certificate after the
        handshake, on the first read): final before the first session, as any refusal. Whether it was."""
        if self._sessions or self._stop.is_set():
            return False
        self._refuse(self._tls_refusal(error))
        return True

    def _refuse(self, why: str) -> None:
        self._refused = self._last_error = why
        self._refusing.set()

    # Publishing and receiving.

    def _send(self, topic: str, data: bytes, retain: bool, qos: int, reply_to: str | None,
              correlation: bytes | None) -> None:
        if len(self._outbox) >= self.max_buffer:
            self._outbox.popleft()
            self._stats["dropped"] += 1
            self._overflowed += 1
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
        received = self._received(message)
        if received is None:
            return
        topic, data, reply_to, correlation = received
        sids = getattr(message.properties, "SubscriptionIdentifier", None)
        retain = message.retain
        if sids:
            for sid in sids:
                route = self._by_sid.get(sid)
                if route is not None:
                    route.deliver(topic, data, retain, reply_to, correlation, sid)
        else:  # a broker without subscription identifiers: match the patterns here
            for route in list(self._routes.values()):
                if matches(route.pattern, topic):
                    route.deliver(topic, data, retain, reply_to, correlation)

    def _received(self, message: aiomqtt.Message) -> tuple[str, bytes, str | None, bytes | None] | None:
        """(topic, payload, reply_to, correlation) of a message from the broker; None (dropped) when too large."""
        topic = message.topic.value
        data = message.payload
        if not isinstance(data, bytes):
            data = b"" if data is None else str(data).encode()
        if len(data) > self.max_payload:
            self._drop(topic, f"the payload is {len(data)} bytes, over max_payload={self.max_payload}")
            return None
        props = message.properties
        return topic, data, getattr(props, "ResponseTopic", None), getattr(props, "CorrelationData", None)

    # Subscriptions.

    async def take_over(self, client_id: str, pattern: str, share: str, until: str, *,
                        timeout: float = 10.0) -> list[Message]:
        """End the session the broker keeps for `client_id`, a member of share group `share` on `pattern`
        that is gone, and return the messages queued for it (payloads as bytes), to be handled here instead.

        Mosquitto 2.0 keeps handing a shared subscription's messages to a member whose connection is gone
        while its session lasts, and never passes them on to the other members: they would be lost when
        the session expires. This connects as `client_id`, resuming that session, takes it out of the group
        (from then on the other members get everything), reads what was queued for it up to the retained
        message on `until` (the member's status topic, say), which the broker queues behind them, and
        disconnects: the session ends with the connection. Waits at most `timeout` seconds for that retained
        message. Trouble (the broker unreachable, the member back and taking its session over again) is
        logged, and what was taken until then returned. Never use it on a client that is still connected:
        connecting under its id takes its connection away.
        """
        self._check_open()
        validate_pattern(pattern)
        validate_share(share)
        validate_topic(until)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # the session ends when this connection does
        taken: list[Message] = []
        try:
            async with self._new_client(client_id, clean_start=False, properties=props) as client:
                await client.unsubscribe(shared(share, pattern))
                await client.subscribe(until, qos=1)
                try:
                    async with asyncio.timeout(timeout):
                        async for message in client.messages:
                            if message.retain:  # the marker, or a stray retained copy: nothing to take
                                if message.topic.value == until:
                                    break
                                continue
                            received = self._received(message)
                            if received is not None and matches(pattern, received[0]):
                                topic, data, reply_to, correlation = received
                                taken.append(Message(topic, data, False, reply_to, correlation))
                except TimeoutError:
                    log.warning("taking over the session of %s: no retained message on %s within %g s; "
                                "%d queued messages taken, more may be lost", client_id, until, timeout, len(taken))
        except aiomqtt.MqttError as exc:
            log.warning("taking over the session of %s at %s failed (%s); %d queued messages taken", client_id,
                        self.address, exc, len(taken))
        return taken

    async def _attach(self, sub: Subscriber) -> None:
        async with self._sub_lock:
            key = sub.pattern if sub.share is None else shared(sub.share, sub.pattern)
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = _Route(sub.pattern, sub.share)
            route.subs.append(sub)
            if self._client is None:
                return  # the next session subscribes it
            refused = await self._subscribe(self._client, route, [sub])
            if refused:
                route.subs.remove(sub)
                if not route.subs:
                    del self._routes[key]
                raise BusError(refused)

    async def _detach(self, sub: Subscription) -> None:
        async with self._sub_lock:
            key = sub.pattern if sub.share is None else shared(sub.share, sub.pattern)
            route = self._routes.get(key)
            if route is None or sub not in route.subs:
                return
            route.subs.remove(sub)
            if route.subs:
                return
            del self._routes[key]
            for sid in [sid for sid, r in self._by_sid.items() if r is route]:
                del self._by_sid[sid]
            if self._client is not None:
                try:
                    await self._until_lost(self._client.unsubscribe(key))
                except aiomqtt.MqttError as exc:
                    log.debug("unsubscribing from %r failed: %s", key, exc)

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
            codes = await self._until_lost(client.subscribe(route.filter, qos=1, properties=props))
        except aiomqtt.MqttError as exc:
            log.debug("subscribing to %r failed: %s", route.filter, exc)
            return None
        refused = [code for code in codes or () if getattr(code, "is_failure", False)]
        if refused:
            return f"the MQTT broker at {self.address} refused the subscription to {route.filter!r}: {refused[0]}"
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

    def _session_options(self) -> dict[str, Any]:
        """How a connection starts: a clean session, or (session_expiry > 0, after this bus's first session)
        resuming the one the broker kept, with what was queued for it."""
        if not self.session_expiry:
            return {"clean_start": True}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        # The first connection starts clean: a session left by an earlier process holds subscription
        # identifiers this one does not know.
        return {"clean_start": self._sessions == 0, "properties": props}

    # Presence.

    def _will(self) -> aiomqtt.Will | None:
        if not self.presence:
            return None
        return aiomqtt.Will(self.presence, self._status("offline"), qos=1, retain=True)


# MQTT v5 CONNACK reason codes that say "not you": bad user name or password (134), not authorized
# (135; Mosquitto's answer to a wrong password too), banned (138), bad authentication method (140).
_REFUSED = {134, 135, 138, 140}
_HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH


def _tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (against `ca`, or the system's CA store) and its host
    name, with `cert`/`key` as the client certificate. Files that are missing or not PEM are a ValueError."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"ca={ca}: cannot read it as PEM CA certificates ({_why(e)})") from None
    if key and not cert:
        raise ValueError(f"key={key} needs cert= (the client certificate it belongs to)")
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cert={cert}{f', key={key}' if key else ''}: cannot read a PEM certificate and its "
                             f"private key ({_why(e)})") from None
    return context


class _PahoLog(logging.LoggerAdapter):
    """paho's log, to the "mqtt" logger as before; a TLS error in it goes to `tls_failed` (called on `loop`),
    and when that takes it as a refusal the line drops to DEBUG: the BusError says it once."""

    def __init__(self, tls_failed: Callable[[ssl.SSLError], bool], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.getLogger("mqtt"), {})
        self._tls_failed, self._loop = tls_failed, loop

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        error = args[-1] if args else None
        if isinstance(error, ssl.SSLError) and level >= logging.ERROR and self._on_loop(error):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)

    def _on_loop(self, error: ssl.SSLError) -> bool:
        try:
            if asyncio.get_running_loop() is self._loop:
                return self._tls_failed(error)
        except RuntimeError:  # paho's own thread
            pass
        self._loop.call_soon_threadsafe(self._tls_failed, error)
        return False


def _why(error: BaseException) -> str:
    return getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)


def _ssl_error(exc: BaseException | None) -> ssl.SSLError | None:
    # aiomqtt re-raises a failed TLS handshake as MqttError(str(error)) from None: the SSLError is its context.
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _publish_properties(reply_to: str | None, correlation: bytes | None) -> Properties | None:
    if reply_to is None and correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    if reply_to is not None:
        props.ResponseTopic = reply_to
    if correlation is not None:
        props.CorrelationData = correlation
    return props
