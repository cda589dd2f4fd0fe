"""A network link to the broker that a test can cut: the broker stays up (and keeps its sessions) while one
client's connection drops, as when a cable or a NAT entry goes away."""

from __future__ import annotations

import asyncio


class Link:
    """Forwards 127.0.0.1:`port` to the broker on `broker_port`, on the running event loop. `cut()` drops every
    connection through it and turns new ones away until `restore()`."""

    def __init__(self, broker_port: int):
        self.broker_port = broker_port
        self.down = False
        self.connections = 0  # accepted while up
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Link:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a goodbye: neither end gets to say anything
        self._writers.clear()

    def restore(self) -> None:
        self.down = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
