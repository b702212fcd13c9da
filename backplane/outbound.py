"""The bounded per-connection outbound buffer between hub code and a transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .waiters import wake


class OutboundBuffer:
    """Bytes waiting for the transport to write them.

    ``write`` never blocks (a fan-out loop must not wait for a slow client); it reports
    when the limit is passed so the owner can drop the connection. Transports take
    everything pending at once, so a burst goes out in one frame or response.

    A transport that can usually write without waiting sets :attr:`sink`. Then everything
    written during one turn of the event loop is handed to the sink at the end of that turn
    as one chunk (one frame, one system call), with no task switch. The sink calls
    :meth:`suspend` when the transport could not finish a write at once; later writes then
    queue until the transport's writer caught up.
    """

    __slots__ = (
        "_chunks",
        "_size",
        "_waiter",
        "_drain_waiter",
        "closed",
        "limit",
        "sink",
        "busy",
        "on_close",
        "_flush_pending",
        "_loop",
    )

    def __init__(self, limit: int) -> None:
        # A list, not a deque: it is only appended to and emptied whole (and is smaller).
        self._chunks: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.limit = limit
        self.sink: Callable[[bytes], None] | None = None
        # True while the transport is in the middle of a write that had to wait.
        self.busy = False
        self.on_close: Callable[[], None] | None = None
        self._flush_pending = False
        self._loop = asyncio.get_running_loop()

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
        if self.sink is None or self.busy:
            self._wake()
        elif not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)
        return self._size <= self.limit

    def _flush(self) -> None:
        self._flush_pending = False
        sink = self.sink
        if sink is None or self.busy:
            self._wake()  # the transport's writer takes over
        elif self._chunks:
            sink(self.take())

    def suspend(self) -> None:
        """The sink could not finish a write: queue later writes and wake the transport."""
        self.busy = True
        self._wake()

    def _wake(self) -> None:
        self._waiter = wake(self._waiter)

    def take(self) -> bytes:
        """Everything pending, joined (empty when nothing is pending)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        self._drain_waiter = wake(self._drain_waiter)
        return data

    async def ready(self) -> None:
        """Wait until bytes are queued, the sink is suspended, or the buffer is closed."""
        while not self._chunks and not self.busy and not self.closed:
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = self._loop.create_future()
            await waiter

    async def drain(self, low_water: int) -> None:
        """Wait until no more than ``low_water`` bytes are pending (producers of streams)."""
        while (self._size > low_water or self.busy) and not self.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await waiter

    def resume(self) -> None:
        """The transport finished its waiting write; wake producers waiting in ``drain``."""
        self.busy = False
        if not self._chunks:
            self._drain_waiter = wake(self._drain_waiter)

    def close(self) -> None:
        """No more writes; wake the transport so it can flush what is left and stop."""
        if self.closed:
            return
        self.closed = True
        if self.on_close is not None:
            self.on_close()
        self._waiter = wake(self._waiter)
        self._drain_waiter = wake(self._drain_waiter)
