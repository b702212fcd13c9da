"""The bounded per-connection outbound buffer between hub code and a transport."""

from __future__ import annotations

import asyncio
from collections import deque


class OutboundBuffer:
    """Bytes waiting for the transport to write them.

    ``write`` never blocks (a fan-out loop must not wait for a slow client); it reports
    when the limit is passed so the owner can drop the connection. Transports take
    everything pending at once, so a burst goes out in one frame or response.
    """

    __slots__ = ("_chunks", "_size", "_waiter", "_drain_waiter", "closed", "limit")

    def __init__(self, limit: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.limit = limit

    @property
    def size(self) -> int:
        """Bytes waiting."""
        return self._size

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False when closed or when the limit is now exceeded."""
        if self.closed:
            return False
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return self._size <= self.limit

    def take(self) -> bytes:
        """Everything pending, joined (empty when nothing is pending)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        drain = self._drain_waiter
        if drain is not None:
            self._drain_waiter = None
            if not drain.done():
                drain.set_result(None)
        return data

    async def get(self) -> bytes | None:
        """Wait for bytes and take them all; None once closed and empty."""
        while not self._chunks:
            if self.closed:
                return None
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        return self.take()

    async def wait(self, timeout: float | None) -> bool:
        """Wait until bytes are pending or the buffer closes; False on timeout."""
        if self._chunks or self.closed:
            return True
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self, low_water: int) -> None:
        """Wait until no more than ``low_water`` bytes are pending (producers of streams)."""
        while self._size > low_water and not self.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
            await waiter

    def close(self) -> None:
        """No more writes; wake the transport so it can flush what is left and stop."""
        if self.closed:
            return
        self.closed = True
        for waiter in (self._waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._waiter = self._drain_waiter = None
