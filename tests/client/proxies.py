"""TCP proxies in front of a real wallet for the client's tests: they count what passes and
can lose one reply on purpose.

The reply is lost the way a network loses it: the proxy reads the server's HTTP/2 frames,
and when armed it closes both connections at the first HEADERS frame of a call's reply,
which the wallet sends only once the operation is committed. The client then sees
UNAVAILABLE for a call the wallet did carry out.
"""

from __future__ import annotations

import asyncio
import contextlib

FRAME_HEADER_BYTES = 9
FRAME_HEADERS = 0x1
CHUNK_BYTES_MAX = 64 * 1024


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self.bytes_up = 0
        self.replies_lost = 0
        self._lose_next_reply = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def lose_next_reply(self) -> None:
        self._lose_next_reply = True

    async def close(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._up(reader, up_writer),
                             self._down(up_reader, writer, up_writer))
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _up(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(CHUNK_BYTES_MAX):
                self.bytes_up += len(chunk)
                dst.write(chunk)
                await dst.drain()
        dst.close()

    async def _down(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    upstream: asyncio.StreamWriter) -> None:
        """Frame by frame, so a reply's first frame can be withheld."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                header = await src.readexactly(FRAME_HEADER_BYTES)
                length = int.from_bytes(header[:3], "big")
                stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                payload = await src.readexactly(length)
                if self._lose_next_reply and header[3] == FRAME_HEADERS and stream_id:
                    self._lose_next_reply = False
                    self.replies_lost += 1
                    for w in (dst, upstream):
                        w.transport.abort()
                    return
                dst.write(header + payload)
                await dst.drain()
        dst.close()


class BlackHole:
    """Accepts connections and never answers: every call to it can only time out."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> BlackHole:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
