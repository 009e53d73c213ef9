"""A small TCP proxy for the slow-network scenario: it sits between the wallet and Postgres,
delays every chunk each way and now and then cuts a live connection (both sides at once, as
a dropped network path looks to each end).

Bounds: one task per direction per connection; chunks of at most 64 KiB; the latency is
paid once per chunk, in order, so a direction never reorders bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

CHUNK_BYTES_MAX = 64 * 1024


@dataclass
class ProxyStats:
    connections: int = 0
    drops: int = 0
    chunks: int = 0
    live: set[asyncio.StreamWriter] = field(default_factory=set)


class SlowProxy:
    """127.0.0.1:<port> → upstream, with `latency_ms` (min, max) per chunk and a drop every
    `drop_every_s` (a random live connection is cut), when enabled."""

    def __init__(self, upstream_host: str, upstream_port: int, *,
                 latency_ms: tuple[int, int] = (0, 0), drop_every_s: float = 0.0,
                 seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency_ms = latency_ms
        self.drop_every_s = drop_every_s
        self.rng = random.Random(seed or None)
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def url(self, upstream_url: str) -> str:
        """`upstream_url` (a database URL naming the upstream) through this proxy: the host
        and port replaced, credentials, path and query kept."""
        parts = urlsplit(upstream_url)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(
            netloc=f"{credentials}@{address}" if credentials else address))

    def start_drops(self, every_s: float) -> None:
        self.drop_every_s = every_s
        if self._dropper is None:
            self._dropper = asyncio.create_task(self._drop_loop())

    def stop_drops(self) -> None:
        if self._dropper is not None:
            self._dropper.cancel()
            self._dropper = None

    async def close(self) -> None:
        self.stop_drops()
        if self._server is not None:
            self._server.close()
        for writer in list(self.stats.live):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), timeout=5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self.stats.live.update(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        try:
            while chunk := await src.read(CHUNK_BYTES_MAX):
                low, high = self.latency_ms
                if high:
                    await asyncio.sleep(self.rng.uniform(low, high) / 1000)
                self.stats.chunks += 1
                dst.write(chunk)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in pair:  # either side gone: the other goes too, as with a real cut
                self.stats.live.discard(w)
                w.transport.abort()

    async def _drop_loop(self) -> None:
        while True:
            await asyncio.sleep(self.drop_every_s * self.rng.uniform(0.5, 1.5))
            live = sorted(self.stats.live, key=id)
            if live:
                victim = self.rng.choice(live)
                self.stats.drops += 1
                victim.transport.abort()
