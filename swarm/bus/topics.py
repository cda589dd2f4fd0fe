"""Topic names of a simulation, and MQTT's topic rules (validation and wildcard matching).

    swarm/<sim>/agents/<agent>/inbox     what one agent observes
    swarm/<sim>/places/<place>           what happens in one place
    swarm/<sim>/events                   every resolved world event
    swarm/<sim>/world                    the latest world snapshot (retained)
    swarm/<sim>/presence/<client>        online/offline of each bus client (retained, last will)
    swarm/<sim>/runtime/...              runtime workers: requests, replies, load

Names become single topic levels: `escape` percent-encodes the characters MQTT reserves ('/', '+', '#',
NUL) and '%' itself, so any name round-trips through `unescape`. Pass `ANY` or `REST` where a subscription
pattern needs a wildcard: `inbox(sim, ANY)` is `swarm/<sim>/agents/+/inbox`.
"""

from __future__ import annotations

from urllib.parse import unquote

ROOT = "swarm"
MAX_BYTES = 65535  # an MQTT topic is a length-prefixed UTF-8 string

_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\0": "%00"})


class Wildcard(str):
    """A wildcard level that the topic helpers leave unescaped."""


ANY = Wildcard("+")  # exactly one level
REST = Wildcard("#")  # every remaining level (must be last)


def escape(name: str) -> str:
    """One topic level from any non-empty name; `unescape` inverts it."""
    if isinstance(name, Wildcard):
        return str(name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a topic level needs a non-empty name, got {name!r}")
    return name.translate(_ESCAPES)


def unescape(level: str) -> str:
    """The name that `escape` turned into this level."""
    return unquote(level)


def levels(topic: str) -> list[str]:
    """The unescaped levels of a topic: `levels(inbox("v", "a/b"))` is `["swarm", "v", "agents", "a/b", "inbox"]`."""
    return [unescape(level) for level in topic.split("/")]


def _join(sim: str, *parts: str) -> str:
    return "/".join((ROOT, escape(sim), *(escape(p) for p in parts)))


def inbox(sim: str, agent: str) -> str:
    """What one agent observes: `swarm/<sim>/agents/<agent>/inbox`."""
    return _join(sim, "agents", agent, "inbox")


def place(sim: str, place: str) -> str:
    """What happens in one place: `swarm/<sim>/places/<place>`."""
    return _join(sim, "places", place)


def events(sim: str) -> str:
    """Every resolved world event: `swarm/<sim>/events`."""
    return _join(sim, "events")


def world(sim: str) -> str:
    """The latest world snapshot, published retained: `swarm/<sim>/world`."""
    return _join(sim, "world")


def report(sim: str) -> str:
    """The simulation's report after each tick (its metrics and the model's runtime stats), published
    retained: `swarm/<sim>/report`."""
    return _join(sim, "report")


def presence(sim: str, client: str) -> str:
    """A bus client's online/offline status (retained; its last will): `swarm/<sim>/presence/<client>`."""
    return _join(sim, "presence", client)


def runtime(sim: str, *parts: str) -> str:
    """Runtime workers' topics: `swarm/<sim>/runtime/<part>/...`."""
    return _join(sim, "runtime", *parts)


def everything(sim: str) -> str:
    """The pattern matching every topic of a simulation: `swarm/<sim>/#`."""
    return _join(sim, REST)


def validate_topic(topic: str) -> str:
    """Return `topic` if it is a valid topic to publish to, else raise ValueError."""
    _check(topic, "topic")
    if "+" in topic or "#" in topic:
        raise ValueError(f"wildcards '+' and '#' are only allowed in subscription patterns, not in topic {topic!r}")
    return topic


def validate_pattern(pattern: str) -> str:
    """Return `pattern` if it is a valid subscription pattern, else raise ValueError."""
    _check(pattern, "pattern")
    parts = pattern.split("/")
    for i, level in enumerate(parts):
        if "#" in level and (level != "#" or i != len(parts) - 1):
            raise ValueError(f"'#' must be a whole level and the last one, in pattern {pattern!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level, in pattern {pattern!r}")
    return pattern


def validate_share(share: str) -> str:
    """Return `share` if it can name an MQTT v5 share group (`$share/<share>/<pattern>`), else raise ValueError."""
    _check(share, "share group name")
    if any(c in share for c in "/+#"):
        raise ValueError(f"a share group name must not contain '/', '+' or '#' (MQTT v5), got {share!r}; "
                         "topics.escape(name) makes one from any name")
    return share


def shared(share: str, pattern: str) -> str:
    """The topic filter of a shared subscription, as a broker reads it: `$share/<share>/<pattern>`."""
    return f"$share/{share}/{pattern}"


def _check(name: str, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} must be a non-empty string, got {name!r}")
    if "\0" in name:
        raise ValueError(f"a {what} must not contain NUL: {name!r}")
    if len(name.encode()) > MAX_BYTES:
        raise ValueError(f"a {what} is at most {MAX_BYTES} bytes of UTF-8; this one starts {name[:40]!r}")


def matches(pattern: str, topic: str) -> bool:
    """Whether `topic` matches the subscription `pattern` under MQTT's rules.

    `+` matches exactly one level (possibly empty), `#` the rest including none (`a/#` matches `a`), and
    a leading wildcard never matches a `$`-topic (`$SYS/...`), as brokers reserve those.
    """
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    want = pattern.split("/")
    have = topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)
