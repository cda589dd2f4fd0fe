"""LocalBus: the in-process bus, the default. Same semantics as MQTT, no broker, no network."""

from __future__ import annotations

from typing import Any

from swarm.bus.base import MAX_PAYLOAD, MAX_QUEUE, Bus, ShareGroup, Subscription, _ReplyInbox, register, url_options
from swarm.bus.topics import matches

_MAX_ROUTES = 100_000  # cached topic -> subscribers entries before the cache starts over
# Options that only mean something for a network transport: accepted so that one `open_bus(url, **options)`
# call works for every URL, and ignored here.
_TRANSPORT_OPTIONS = ("connect_timeout", "keepalive", "max_buffer", "inflight", "session_expiry", "close_timeout")

Subscriber = Subscription | _ReplyInbox | ShareGroup


@register("local")
class LocalBus(Bus):
    """In-process bus on one asyncio event loop: `publish` delivers synchronously into subscriber queues.

    Payloads still go through the codec, so subscribers get their own decoded copies and the same size
    and decode checks apply as over MQTT. `qos` is accepted and ignored: nothing is ever lost in transit.
    The subscriptions of a share group on one pattern take turns, as the members of an MQTT shared
    subscription do.
    """

    def __init__(self, *, format: str = "msgpack", client_id: str | None = None, presence: str | None = None,
                 max_payload: int = MAX_PAYLOAD, max_queue: int = MAX_QUEUE) -> None:
        super().__init__(format=format, client_id=client_id or "local", presence=presence, max_payload=max_payload,
                         max_queue=max_queue)
        self._subscribers: list[Subscriber] = []
        # Matching every pattern on every publish would dominate the cost of a tick, so the subscribers
        # of each topic are worked out once and cached until the set of subscriptions changes.
        self._routes: dict[str, tuple[Subscriber, ...]] = {}
        self._retained: dict[str, bytes] = {}
        self._groups: dict[tuple[str, str], ShareGroup] = {}  # (share, pattern) -> its subscriptions

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LocalBus:
        for name in _TRANSPORT_OPTIONS:
            options.pop(name, None)
        return cls(**{**url_options(url), **options})

    async def connect(self) -> None:
        """Nothing to reach; marks presence online when a presence topic was given."""
        self._check_open()
        if self.presence:
            self._send(self.presence, self._status("online"), True, 1, None, None)

    async def close(self) -> None:
        """Mark presence offline and stop (see `Bus.close`)."""
        if self.presence and not self.closed:
            self._send(self.presence, self._status("offline"), True, 1, None, None)
        await super().close()

    def __repr__(self) -> str:
        return f"<LocalBus format={self.format} subscriptions={len(self._subscribers)}>"

    def _send(self, topic: str, data: bytes, retain: bool, qos: int, reply_to: str | None,
              correlation: bytes | None) -> None:
        if retain:
            if data:
                self._retained[topic] = data
            else:
                self._retained.pop(topic, None)
        targets = self._routes.get(topic)
        if targets is None:
            targets = self._route(topic)
        for sub in targets:
            # Live messages arrive with retain=False, as from an MQTT v5 broker (retain-as-published off).
            sub._deliver(topic, data, False, reply_to, correlation)

    def _route(self, topic: str) -> tuple[Subscriber, ...]:
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        targets = self._routes[topic] = tuple(s for s in self._subscribers if matches(s.pattern, topic))
        return targets

    async def _attach(self, sub: Subscription | _ReplyInbox) -> None:
        if sub.share is not None:  # it joins its group, which is one subscriber; no retained messages
            group = self._groups.get((sub.share, sub.pattern))
            if group is None:
                group = self._groups[sub.share, sub.pattern] = ShareGroup(sub.pattern, sub.share)
                self._subscribers.append(group)
                self._routes.clear()
            group.subs.append(sub)
            return
        self._subscribers.append(sub)
        self._routes.clear()
        for topic, data in list(self._retained.items()):
            if matches(sub.pattern, topic):
                sub._deliver(topic, data, True)

    async def _detach(self, sub: Subscription) -> None:
        leaving: Subscriber = sub
        if sub.share is not None:  # it leaves its group; the group leaves with its last member
            group = self._groups.get((sub.share, sub.pattern))
            if group is None or sub not in group.subs:
                return
            group.subs.remove(sub)
            if group.subs:
                return
            del self._groups[sub.share, sub.pattern]
            leaving = group
        if leaving in self._subscribers:
            self._subscribers.remove(leaving)
            self._routes.clear()
