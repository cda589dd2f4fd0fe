"""Payload codec: msgspec msgpack by default, JSON for clients that ask for it (`?format=json`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

FORMATS = ("msgpack", "json")

Decode = Callable[[bytes], Any]


class Codec:
    """Encodes anything msgspec can (Structs, dicts, lists, scalars) and decodes into a requested type.

    Raw `bytes` pass through untouched both ways (`decoder(bytes)`), so callers can send pre-encoded
    payloads or read the wire format. Decoders are cached per type: building one compiles a schema.
    """

    def __init__(self, format: str = "msgpack") -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown payload format {format!r}: expected one of {', '.join(FORMATS)}")
        self.format = format
        module = msgspec.msgpack if format == "msgpack" else msgspec.json
        self._encode = module.Encoder().encode
        self._decoder_class = module.Decoder
        self._decoders: dict[Any, Decode] = {}

    def encode(self, obj: Any) -> bytes:
        """The wire bytes of `obj`; bytes-like objects are sent as they are."""
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        return self._encode(obj)

    def decoder(self, type: Any = None) -> Decode:
        """A function from wire bytes to `type` (None: plain Python objects; `bytes`: the raw payload).

        It raises msgspec.DecodeError (ValidationError included) on a payload that does not fit.
        """
        if type is bytes:
            return bytes
        decode = self._decoders.get(type)
        if decode is None:
            decode = self._decoders[type] = self._decoder_class(Any if type is None else type).decode
        return decode

    def decode(self, data: bytes, type: Any = None) -> Any:
        """Decode one payload into `type` (see `decoder`)."""
        return self.decoder(type)(data)
