"""The bus contract: `Bus`, `Subscription`, `Message`, request/reply, and the backend registry of `open_bus`."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import secrets
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import msgspec

from swarm.bus.codec import Codec, DecodeError
from swarm.bus.ratelog import RateLimitedLog
from swarm.bus.topics import escape, validate_pattern, validate_share, validate_topic
from swarm.bus.url import parse_bus_url

log = logging.getLogger("swarm.bus")

MAX_PAYLOAD = 1 << 20  # 1 MiB: far above any event or snapshot slice, far below what stalls a broker
MAX_QUEUE = 10_000
REPLY_ROOT = "swarm/_reply"


class BusError(Exception):
    """The bus cannot do what was asked: broker unreachable, payload refused, bus closed."""


class Message(msgspec.Struct, frozen=True, gc=False):  # gc=False: a Message never refers back to itself
    """One received message: its topic, its decoded payload, and whether it came from the retained store.

    `reply_to` and `correlation` are set on requests (MQTT v5 ResponseTopic and CorrelationData).
    """

    topic: str
    payload: Any
    retain: bool = False
    reply_to: str | None = None
    correlation: bytes | None = None


class Subscription:
    """Messages on topics matching `pattern`, each decoded into `type`, waiting in a bounded queue.

    When the queue is full the oldest message is dropped (and counted), so a slow reader loses history
    rather than stalling the publishers. `async for msg in sub` ends when the subscription is closed.
    `share` is the share group it belongs to (see `Bus.subscribe`), or None.
    """

    _sid = 0  # the MQTT subscription identifier this subscriber joined under (MqttBus only)

    def __init__(self, bus: Bus, pattern: str, type: Any, max_queue: int, share: str | None = None) -> None:
        self.bus = bus
        self.pattern = pattern
        self.share = share
        self.type = type
        self.max_queue = max_queue
        self.closed = False
        self._decode = bus.codec.decoder(type)
        self._queue: deque[Message] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._overflows = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._queue)} queued"
        group = f" share={self.share!r}" if self.share else ""
        return f"<Subscription {self.pattern!r}{group} type={_name(self.type)} {state}>"

    def __len__(self) -> int:
        return len(self._queue)

    def drain(self) -> list[Message]:
        """Everything received so far, oldest first, without waiting."""
        items = list(self._queue)
        self._queue.clear()
        return items

    async def get(self, timeout: float | None = None) -> Message:
        """The next message; raises asyncio.TimeoutError after `timeout` seconds, BusError once closed and empty."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._queue:
            if self.closed:
                raise BusError(f"the subscription to {self.pattern!r} is closed")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, deadline - loop.time())
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._queue.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.get()
        except BusError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop receiving; messages already queued can still be read."""
        if self.closed:
            return
        self._close()
        self.bus._subscriptions.discard(self)
        if not self.bus.closed:
            await self.bus._detach(self)

    def _close(self) -> None:
        self.closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _deliver(self, topic: str, data: bytes, retain: bool, reply_to: str | None = None,
                 correlation: bytes | None = None) -> None:
        """Decode and enqueue one payload (called by the backend). Never raises: bad payloads are dropped."""
        if self.closed:
            return
        if not data and self.type is not bytes:
            return  # an empty payload clears a retained message: nothing to decode, nothing to report
        try:
            payload = self._decode(data)
        except DecodeError as exc:  # whatever the bytes: ValidationError, too deep, bad UTF-8, ...
            self.bus._drop(topic, f"payload does not decode as {_name(self.type)}: {exc}")
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            queue.popleft()
            self._overflow(topic)
        queue.append(Message(topic, payload, retain, reply_to, correlation))
        self.bus._stats["received"] += 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _overflow(self, topic: str) -> None:
        self.bus._stats["dropped"] += 1
        self._overflows += 1
        if self._overflows == 1 or self._overflows % 10_000 == 0:  # say it, but do not flood the log
            log.warning("subscription %r is full (max_queue=%d): dropped its oldest message (%d so far), on %s",
                        self.pattern, self.max_queue, self._overflows, topic)


class ShareGroup:
    """One bus's subscriptions in one share group on one pattern: each message goes to one of them, in turn.

    Backends deliver a shared subscription's messages here. Retained messages are not delivered: MQTT v5
    sends none to a shared subscription (Mosquitto 2.0 does anyway; they are dropped here).
    """

    __slots__ = ("pattern", "share", "subs", "_turn")

    def __init__(self, pattern: str, share: str, subs: list[Subscription] | None = None) -> None:
        self.pattern = pattern
        self.share = share
        self.subs = subs if subs is not None else []
        self._turn = 0

    def _deliver(self, topic: str, data: bytes, retain: bool, reply_to: str | None = None,
                 correlation: bytes | None = None) -> None:
        if retain:
            return
        subs = self.subs
        for _ in range(len(subs)):  # a subscription closing (and not yet detached) passes its turn on
            self._turn = (self._turn + 1) % len(subs)
            sub = subs[self._turn]
            if not sub.closed:
                sub._deliver(topic, data, False, reply_to, correlation)
                return


Handler = Callable[[Message], Awaitable[Any] | Any]  # async (or plain) function: request -> reply or None


class Service:
    """A running `Bus.serve`: calls `handler` on each request and publishes its reply. Close it to stop."""

    def __init__(self, bus: Bus, subscription: Subscription, handler: Handler, concurrency: int) -> None:
        self.bus = bus
        self.subscription = subscription
        self._handler = handler
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        async for msg in self.subscription:
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._answer(msg))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, msg: Message) -> None:
        try:
            reply = self._handler(msg)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception:  # one failing request must not stop the service
            log.exception("the handler serving %r failed on a message on %s", self.subscription.pattern, msg.topic)
            return
        finally:
            self._slots.release()
        if reply is not None and msg.reply_to is not None:
            self.bus._reply(msg.reply_to, reply, msg.correlation)

    async def close(self) -> None:
        """Stop serving; requests being handled are cancelled."""
        await self.subscription.close()
        await self._cancel()

    async def _cancel(self) -> None:
        self.bus._services.discard(self)
        tasks = [self._task, *self._running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _ReplyInbox:
    """The requester's side of request/reply: hands each reply to the request waiting for its correlation id."""

    _sid = 0
    closed = False
    share = None

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.pattern = bus.reply_topic
        self.type = bytes

    def _deliver(self, topic: str, data: bytes, retain: bool, reply_to: str | None = None,
                 correlation: bytes | None = None) -> None:
        future = self.bus._pending.get(correlation) if correlation else None
        if future is None or future.done():
            log.debug("a reply on %s matches no waiting request (late, or not ours)", topic)
            return
        self.bus._stats["received"] += 1
        future.set_result(data)


class Bus(ABC):
    """A publish/subscribe message bus with MQTT semantics, whatever the transport.

    `presence`, when given, is a topic where the bus keeps a retained `{"client": id, "status": ...}`:
    "online" once connected, "offline" after `close()` (and, over MQTT, as the last will).

    Invariants every backend keeps:

    - Payloads are encoded once on publish (msgpack, or JSON with `format="json"`) and decoded per
      subscription into its `type`: each subscriber gets its own copy, never the publisher's object.
    - `publish` refuses a payload over `max_payload` (BusError); a received payload that is too large or
      does not decode is logged and dropped (`stats["dropped"]`). Nothing a peer sends raises in a receiver.
    - Topics follow MQTT rules (`topics.matches`); a retained message is replayed to each new matching
      subscription with `retain=True`, and an empty retained payload clears it.
    - Messages from one publisher on one topic arrive in the order they were published.
    - A bus belongs to the event loop that uses it; it is not thread-safe.

    A backend implements `_send` (hand an encoded payload to the transport, without blocking) and
    `_attach`/`_detach` (start and stop delivering to a subscription), and registers by URL scheme.
    """

    scheme: ClassVar[str]

    def __init__(self, *, format: str = "msgpack", client_id: str | None = None, presence: str | None = None,
                 max_payload: int = MAX_PAYLOAD, max_queue: int = MAX_QUEUE) -> None:
        if max_payload <= 0 or max_queue <= 0:
            raise ValueError(f"max_payload and max_queue must be positive, got {max_payload} and {max_queue}")
        self.codec = Codec(format)
        self.client_id = client_id or f"swarm-{secrets.token_hex(4)}"
        self.presence = validate_topic(presence) if presence else None
        self.reply_topic = f"{REPLY_ROOT}/{escape(self.client_id)}"
        self.max_payload = max_payload
        self.max_queue = max_queue
        self.closed = False
        self._stats = {"published": 0, "received": 0, "dropped": 0}
        self._drop_log = RateLimitedLog(log, "dropped messages")
        self._subscriptions: set[Subscription] = set()
        self._services: set[Service] = set()
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._reply_inbox: asyncio.Task[None] | None = None
        # Correlation ids: a per-bus random prefix, so a reply meant for an earlier bus with the same
        # client id can never be taken for the answer to a new request.
        self._correlation_prefix = secrets.token_bytes(4)
        self._request_ids = itertools.count(1)

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Bus:
        """A bus for `url` (see `open_bus`); keyword options override the URL's query parameters."""

    @property
    def format(self) -> str:
        """The payload format on the wire: "msgpack" or "json"."""
        return self.codec.format

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages published, received (delivered to a subscription), dropped."""
        return dict(self._stats)

    @abstractmethod
    async def connect(self) -> None:
        """Connect to the transport (raises BusError if it cannot) and announce presence."""

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every published message has left this process; False if `timeout` ran out first."""
        return True

    async def close(self) -> None:
        """Stop the bus: subscriptions end, services stop, waiting requests fail with BusError."""
        if self.closed:
            return
        self.closed = True
        for service in list(self._services):
            await service._cancel()
        for sub in self._subscriptions:
            sub._close()
        self._subscriptions.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusError("the bus was closed before the reply came"))
        if self._reply_inbox is not None:
            self._reply_inbox.cancel()
        self._drop_log.flush()

    async def __aenter__(self) -> Bus:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(self, topic: str, msg: Any, retain: bool = False, qos: int = 1, *, reply_to: str | None = None,
                      correlation: bytes | None = None) -> None:
        """Publish `msg` (a Struct, anything msgspec encodes, or raw bytes sent as they are) on `topic`.

        `retain=True` keeps it as the topic's last known value for future subscribers. `reply_to` and
        `correlation` travel as MQTT v5 ResponseTopic and CorrelationData (a request, or a reply to one:
        `request` and `serve` use them for one reply; a stream of replies publishes them itself). Raises
        ValueError on an invalid topic and BusError on a payload over `max_payload` or one that cannot be encoded.
        """
        data = self._prepare(topic, msg, qos)
        await self._flow()
        self._stats["published"] += 1
        self._send(topic, data, retain, qos, reply_to, correlation)

    def publish_nowait(self, topic: str, msg: Any, retain: bool = False, qos: int = 1, *,
                       reply_to: str | None = None, correlation: bytes | None = None) -> None:
        """`publish` without waiting: for synchronous code. Over MQTT it never waits for the buffer to drain."""
        data = self._prepare(topic, msg, qos)
        self._stats["published"] += 1
        self._send(topic, data, retain, qos, reply_to, correlation)

    async def subscribe(self, pattern: str, type: Any = None, *, max_queue: int | None = None,
                        share: str | None = None) -> Subscription:
        """Receive messages on topics matching `pattern` (MQTT wildcards `+` and `#`), decoded into `type`.

        `type=None` decodes into plain Python objects, `type=bytes` keeps the raw payload. When this
        returns, the subscription is live: anything published afterwards reaches it.

        `share` names a share group (an MQTT v5 shared subscription, `$share/<share>/<pattern>`): each
        message goes to one subscription of the group on `pattern`, whichever bus on the broker it belongs
        to (the broker picks the bus; within a bus the group's subscriptions take turns). A shared
        subscription gets no retained messages. Raises ValueError on a share name with '/', '+' or '#'.
        """
        self._check_open()
        validate_pattern(pattern)
        if share is not None:
            validate_share(share)
        sub = Subscription(self, pattern, type, max_queue or self.max_queue, share)
        self._subscriptions.add(sub)
        await self._attach(sub)
        return sub

    async def request(self, topic: str, msg: Any, *, type: Any = None, timeout: float = 5.0) -> Any:
        """Publish a request on `topic` and return the first reply, decoded into `type`.

        Raises asyncio.TimeoutError when no reply comes within `timeout` seconds (no server, or it chose
        not to answer) and BusError when the reply does not decode.
        """
        data = self._prepare(topic, msg, 1)
        if self._reply_inbox is None:
            self._reply_inbox = asyncio.get_running_loop().create_task(self._attach(_ReplyInbox(self)))
        await asyncio.shield(self._reply_inbox)  # the inbox is live before the first request leaves
        correlation = self._correlation_prefix + next(self._request_ids).to_bytes(8, "big")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            self._stats["published"] += 1
            self._send(topic, data, False, 1, self.reply_topic, correlation)
            reply = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"no reply to the request on {topic} within {timeout:g} s") from None
        finally:
            del self._pending[correlation]
        try:
            return self.codec.decode(reply, type)
        except DecodeError as exc:
            raise BusError(f"the reply to the request on {topic} does not decode as {_name(type)}: {exc}") from exc

    async def serve(self, pattern: str, handler: Handler, *, type: Any = None, concurrency: int = 64,
                    share: str | None = None) -> Service:
        """Answer requests on `pattern`: `await handler(msg)` returns the reply (None: no reply).

        The handler may also be a plain function. Up to `concurrency` requests are handled at once, so an
        engine behind the handler can batch them. A handler that raises is logged and sends no reply (the
        requester times out). With `share`, services of one share group answer each request once between
        them (see `subscribe`). Stop with `await service.close()`.
        """
        sub = await self.subscribe(pattern, type, share=share)
        service = Service(self, sub, handler, concurrency)
        self._services.add(service)
        return service

    # The backend contract.

    @abstractmethod
    def _send(self, topic: str, data: bytes, retain: bool, qos: int, reply_to: str | None,
              correlation: bytes | None) -> None:
        """Hand one encoded, checked payload to the transport. Must not block or raise on transport trouble."""

    @abstractmethod
    async def _attach(self, sub: Subscription | _ReplyInbox) -> None:
        """Start delivering messages matching `sub.pattern` to `sub._deliver`, retained ones first (none to
        a shared subscription, `sub.share` set: its group's messages go through a `ShareGroup`)."""

    @abstractmethod
    async def _detach(self, sub: Subscription) -> None:
        """Stop delivering to `sub`."""

    async def _flow(self) -> None:
        """Wait while the transport is behind (backpressure for `publish`); by default never."""
        return None

    # Shared helpers.

    def _prepare(self, topic: str, msg: Any, qos: int) -> bytes:
        self._check_open()
        validate_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        return self._encode(topic, msg)

    def _encode(self, topic: str, msg: Any) -> bytes:
        try:
            data = self.codec.encode(msg)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise BusError(f"cannot encode a {msg.__class__.__name__} for {topic}: {exc}") from exc
        if len(data) > self.max_payload:
            raise BusError(f"the payload for {topic} is {len(data)} bytes, over max_payload={self.max_payload}")
        return data

    def _reply(self, topic: str, reply: Any, correlation: bytes | None) -> None:
        try:
            validate_topic(topic)
            data = self._encode(topic, reply)
        except (ValueError, BusError) as exc:
            log.warning("cannot send the reply on %r: %s", topic, exc)
            return
        if not self.closed:
            self._stats["published"] += 1
            self._send(topic, data, False, 1, None, correlation)

    def _status(self, status: str) -> bytes:
        """The payload published on the presence topic: {"client": id, "status": "online" | "offline"}."""
        return self.codec.encode({"client": self.client_id, "status": status})

    def _drop(self, topic: str, why: str) -> None:
        self._stats["dropped"] += 1
        self._drop_log.warn("dropped a message on %s: %s", topic, why)

    def _check_open(self) -> None:
        if self.closed:
            raise BusError("the bus is closed")


BACKENDS: dict[str, type[Bus]] = {}


def register(scheme: str, *more: str) -> Callable[[type[Bus]], type[Bus]]:
    """Class decorator: make a Bus backend available to `open_bus` under one URL scheme or more."""

    def add(cls: type[Bus]) -> type[Bus]:
        cls.scheme = scheme
        for name in (scheme, *more):
            BACKENDS[name] = cls
        return cls

    return add


def open_bus(url: str | None = None, **options: Any) -> Bus:
    """The bus for a URL: None or "local" -> LocalBus; "mqtt://host:port" or "mqtts://host:port" -> MqttBus.

    `?format=json` selects JSON payloads; `mqtt://user:password@host` authenticates (`swarm.bus.url` has
    the whole syntax: TLS parameters, the password from SWARM_MQTT_PASSWORD). Keyword options (client_id,
    presence, max_payload, ...) go to the backend's constructor. Call `await bus.connect()` (or use
    `async with`) before use.
    """
    parsed = parse_bus_url(url)
    backend = BACKENDS.get(parsed.scheme)
    if backend is None:
        known = ", ".join(f"{name}://..." if name != "local" else name for name in BACKENDS)
        raise ValueError(f"unknown bus {parsed.shown!r}: expected one of {known}")
    return backend.from_url(url or "local", **options)


def url_options(url: str) -> dict[str, Any]:
    """The bus options a URL's query carries (`format`; `ca`, `cert`, `key` for TLS); others are an error."""
    return parse_bus_url(url).options


def _name(type: Any) -> str:
    return "plain objects" if type is None else getattr(type, "__name__", repr(type))
