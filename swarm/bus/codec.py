"""Payload codec: msgspec msgpack by default, JSON for clients that ask for it (`?format=json`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

FORMATS = ("msgpack", "json")

Decode = Callable[[bytes], Any]

DecodeError = msgspec.DecodeError  # the one error a decoder raises (msgspec.ValidationError is one)


class Codec:
    """Encodes anything msgspec can (Structs, dicts, lists, scalars) and decodes into a requested type.

    Raw `bytes` pass through untouched both ways (`decoder(bytes)`), so callers can send pre-encoded
    payloads or read the wire format. Decoders are cached per type: building one compiles a schema.
    """

    def __init__(self, format: str = "msgpack") -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown payload format {format!r}: expected one of {', '.join(FORMATS)}")
        self.format = format
        self._module = msgspec.msgpack if format == "msgpack" else msgspec.json
        self._encode = self._module.Encoder().encode
        self._decoders: dict[Any, Decode] = {}

    def encode(self, obj: Any) -> bytes:
        """The wire bytes of `obj`; bytes-like objects are sent as they are."""
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        return self._encode(obj)

    def decoder(self, type: Any = None) -> Decode:
        """A function from wire bytes to `type` (None: plain Python objects; `bytes`: the raw payload).

        Whatever the bytes, it returns a `type` or raises DecodeError (msgspec.ValidationError included):
        deep nesting, invalid UTF-8, numbers out of range and wrong types are all a DecodeError.
        """
        if type is bytes:
            return bytes
        decode = self._decoders.get(type)
        if decode is None:
            decode = self._decoders[type] = guarded(self._module.Decoder(Any if type is None else type).decode)
        return decode

    def decode(self, data: bytes, type: Any = None) -> Any:
        """Decode one payload into `type` (see `decoder`)."""
        return self.decoder(type)(data)


def guarded(decode: Decode) -> Decode:
    """`decode`, raising DecodeError for every payload it cannot read.

    msgspec raises RecursionError past its nesting limit (about 1,000 levels, less when the caller's stack
    is deep already), which is not a DecodeError; and a Struct's own checks may raise something else.
    A receiver must be able to treat all of these as one bad message.
    """

    def safe(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            raise
        except RecursionError:
            raise DecodeError("the payload nests too deeply") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise DecodeError(f"the payload does not decode: {exc}") from None

    return safe
