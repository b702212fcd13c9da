"""The bounded per-connection outbound buffer between hub code and a transport."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from .waiters import wake


class _Flusher:
    """The end-of-turn flush of every buffer written to during a turn of one event loop: one
    loop callback for all of them (a fan-out to N connections, or N connections answered in
    one turn), rather than one each."""

    __slots__ = ("_loop", "_buffers", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A weak reference: the flusher is the value of a weak mapping keyed by its loop.
        self._loop = weakref.ref(loop)
        self._buffers: list[OutboundBuffer] = []
        self._scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop whose turns this flusher ends."""
        loop = self._loop()
        assert loop is not None
        return loop

    def add(self, buffer: OutboundBuffer) -> None:
        """Flush ``buffer`` at the end of this turn (after those added before it)."""
        self._buffers.append(buffer)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        buffers, self._buffers = self._buffers, []
        for buffer in buffers:
            try:
                buffer._flush()
            except Exception as exc:  # one failing sink must not keep the others' bytes back
                self.loop.call_exception_handler(
                    {"message": "outbound flush failed", "exception": exc}
                )


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher() -> _Flusher:
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


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

    A *gate* (:meth:`hold`, with ``--durable-resume``) holds every write back until its owner
    lets it go (:meth:`release`): each write calls the gate, which records what the connection
    sent before its bytes may leave. Writes leave in order; a write is released with all
    those before it (:attr:`mark` numbers them).
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
        "_flusher",
        "gate",
        "_written",
        "_released",
        "_taken",
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
        self._flusher = _flusher()
        #: Called on every write while the buffer is gated (see :meth:`hold`).
        self.gate: Callable[[], None] | None = None
        # While gated: writes ever queued, released, and taken (counts, not bytes).
        self._written = 0
        self._released = 0
        self._taken = 0

    @property
    def size(self) -> int:
        """Bytes waiting (released or not)."""
        return self._size

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False when closed or when the limit is now exceeded."""
        if self.closed:
            return False
        self._chunks.append(data)
        self._size += len(data)
        gate = self.gate
        if gate is not None:
            self._written += 1
            gate()
        elif self.sink is None or self.busy:
            self._wake()
        elif not self._flush_pending:
            self._flush_pending = True
            self._flusher.add(self)
        return self._size <= self.limit

    def flush(self) -> None:
        """Hand what is pending to the sink now rather than at the end of the turn.

        A transport calls this when it has fed a frame to its connection: the replies that
        were written meanwhile leave in one frame at once. Writes after it are flushed at the
        end of the turn as usual.
        """
        if self._flush_pending and self.sink is not None and not self.busy:
            data = self.take()
            if data:
                self.sink(data)

    def _flush(self) -> None:
        self._flush_pending = False
        sink = self.sink
        if sink is None or self.busy:
            self._wake()  # the transport's writer takes over
        else:
            data = self.take()
            if data:
                sink(data)

    def _ready_to_go(self) -> None:
        """What a write does without a gate: hand the new bytes on."""
        if self.sink is None or self.busy:
            self._wake()
        elif not self._flush_pending:
            self._flush_pending = True
            self._flusher.add(self)

    # -- the gate ---------------------------------------------------------------------------

    def hold(self, gate: Callable[[], None]) -> None:
        """From now on hold every write until it is released; ``gate()`` is told of each.

        What is queued already may go.
        """
        self._taken = 0
        self._written = self._released = len(self._chunks)
        self.gate = gate

    def open(self) -> None:
        """Stop gating: everything queued may go."""
        if self.gate is None:
            return
        self.gate = None
        if self._chunks:
            self._ready_to_go()

    @property
    def mark(self) -> int:
        """How many writes were queued while gated (:meth:`release` takes such a number)."""
        return self._written

    @property
    def held(self) -> int:
        """Writes queued and not yet released (0 without a gate)."""
        return self._written - self._released if self.gate is not None else 0

    def release(self, mark: int) -> None:
        """The writes up to ``mark`` (a past :attr:`mark`) may go."""
        if self.gate is None or mark <= self._released:
            return
        self._released = min(mark, self._written)
        if not self.closed or self._chunks:
            self._ready_to_go()

    # -- the transport's side --------------------------------------------------------------

    def suspend(self) -> None:
        """The sink could not finish a write: queue later writes and wake the transport."""
        self.busy = True
        self._wake()

    def _wake(self) -> None:
        self._waiter = wake(self._waiter)

    def _sendable(self) -> int:
        """How many queued writes may go now."""
        if self.gate is None:
            return len(self._chunks)
        return self._released - self._taken

    def take(self) -> bytes:
        """Everything pending that may go, joined (empty when nothing may)."""
        chunks = self._chunks
        if not chunks:
            return b""
        if self.gate is not None:
            n = self._released - self._taken
            if n <= 0:
                return b""
            if n < len(chunks):
                out = chunks[:n]
                del chunks[:n]
                self._taken += n
                data = b"".join(out)
                self._size -= len(data)
                self._drain_waiter = wake(self._drain_waiter)
                return data
            self._taken += len(chunks)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        self._drain_waiter = wake(self._drain_waiter)
        return data

    def discard(self) -> None:
        """Drop everything pending, released or not (a stateful connection's new socket
        starts from its replay)."""
        self._chunks.clear()
        self._size = 0
        self._taken = self._released = self._written
        self._drain_waiter = wake(self._drain_waiter)

    async def ready(self) -> None:
        """Wait until bytes may go, the sink is suspended, or the buffer is closed and empty
        (a closed buffer's held bytes are waited for)."""
        while not self._sendable() and not self.busy and not (self.closed and not self._chunks):
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = self._flusher.loop.create_future()
            await waiter

    async def drain(self, low_water: int) -> None:
        """Wait until no more than ``low_water`` bytes are pending (producers of streams)."""
        while (self._size > low_water or self.busy) and not self.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._flusher.loop.create_future()
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
