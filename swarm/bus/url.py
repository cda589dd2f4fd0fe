"""Bus URLs, taken apart in one place for every caller (`open_bus`, `swarm run/serve/watch`, the TUI).

    local[?format=json]
    mqtt://[user[:password]@]host[:port][?format=json]                    port 1883 by default
    mqtts://[user[:password]@]host[:port][?ca=PATH&cert=PATH&key=PATH]     TLS, port 8883 by default

The user and password are percent-decoded (write '@' as %40, ':' as %3A). A URL with a user and no
password takes the password from the environment variable SWARM_MQTT_PASSWORD, so it never has to be on
a command line. `mqtts://` verifies the broker's certificate against `ca=` (a PEM file), or against the
system's CA store when there is no `ca=`; `cert=` and `key=` are a client certificate and its key.

A password is never shown: errors and displays use `redact(url)` (`user:***@`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PASSWORD_ENV = "SWARM_MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
TLS_SCHEMES = ("mqtts",)
_TLS_PARAMS = ("ca", "cert", "key")
_HIDDEN = "***"


@dataclasses.dataclass(frozen=True)
class BusURL:
    """A bus URL's parts. `options` holds the query's parameters (`format`, and `ca`, `cert`, `key` for TLS);
    the password stays out of `repr` and `str` (which is the redacted URL)."""

    scheme: str
    host: str = "127.0.0.1"
    port: int | None = None
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    shown: str = ""  # the URL as given, password redacted

    @property
    def tls(self) -> bool:
        """Whether the scheme asks for TLS (mqtts://)."""
        return self.scheme in TLS_SCHEMES

    def __str__(self) -> str:
        return self.shown


def parse_bus_url(url: str | None) -> BusURL:
    """The parts of a bus URL (None is "local"). Raises ValueError, naming the URL without its password,
    for a bad port, a path, an empty user, a password without a user, or a query parameter the scheme
    does not take (`ca=`, `cert=`, `key=` need mqtts://)."""
    url = url or "local"
    shown = redact(url)
    if "://" not in url:  # "local", "local?format=json"
        scheme, _, query = url.partition("?")
        return BusURL(scheme, options=_options(scheme, query, shown), shown=shown)
    parts = urlsplit(url)
    scheme = parts.scheme
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"bus URL {shown!r} has a path; expected {scheme}://[user[:password]@]host[:port][?...]")
    try:
        port = parts.port
    except ValueError as e:  # urllib's message names the port, never the password
        raise ValueError(f"bad port in bus URL {shown!r}: {e}") from None
    user, password = _credentials(parts.username, parts.password, shown)
    return BusURL(scheme, parts.hostname or "127.0.0.1", port or DEFAULT_PORTS.get(scheme), user, password,
                  _options(scheme, parts.query, shown), shown)


def broker_url(url: str, who: str) -> BusURL:
    """The parts of `url`, which must name an MQTT broker (mqtt:// or mqtts://): ValueError otherwise,
    saying that `who` (e.g. "swarm watch") needs one."""
    parts = parse_bus_url(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{who} needs an MQTT broker, expected mqtt://host:port or mqtts://host:port, "
                         f"got {parts.shown!r}")
    return parts


def redact(url: str) -> str:
    """`url` with its password replaced by ***: safe to print, log and show. Never raises."""
    split = _split_userinfo(url)
    if split is None:
        return url
    head, user, tail = split
    return f"{head}{user}:{_HIDDEN}@{tail}"


def strip_password(url: str | None) -> str | None:
    """`url` without its password (the user stays): what a checkpoint may keep. Whoever opens it again
    gives the password through SWARM_MQTT_PASSWORD."""
    split = None if url is None else _split_userinfo(url)
    if split is None:
        return url
    head, user, tail = split
    return f"{head}{user}@{tail}"


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """("scheme://", "user", "host:port...") of a URL that carries a password; None for one that does not.

    Splits as urllib does: the authority ends at the first '/', '?' or '#', the user info at its last '@',
    the user at the first ':' of the user info.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return f"{scheme}://", userinfo.partition(":")[0], hostport + rest[end:]


def _credentials(user: str | None, password: str | None, shown: str) -> tuple[str | None, str | None]:
    if user is None:
        return None, None
    user = unquote(user)
    if not user:
        raise ValueError(f"bus URL {shown!r} has an empty user name: write user:password@host, or no '@' at all")
    if password is None:  # a user alone: the password comes from the environment, not the command line
        return user, os.environ.get(PASSWORD_ENV)
    return user, unquote(password)


def _options(scheme: str, query: str, shown: str) -> dict[str, Any]:
    known = ("format", *_TLS_PARAMS) if scheme in TLS_SCHEMES else ("format",)
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _TLS_PARAMS and scheme not in TLS_SCHEMES:
            raise ValueError(f"{key}= in bus URL {shown!r} needs TLS: use mqtts://host:port?{key}=PATH")
        if key not in known:
            raise ValueError(f"unknown bus URL parameter {key!r} in {shown!r}; {scheme} URLs take {', '.join(known)}")
        if key in _TLS_PARAMS and not value:
            raise ValueError(f"{key}= in bus URL {shown!r} needs a file path")
        options[key] = value
    return options
