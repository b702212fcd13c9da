"""One connection's streams: uploads (what a hub method's ``AsyncIterator[T]`` parameter gets)
and the running server-to-client streams, with their cancellation."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from .errors import HubException
from .tasks import start_task
from .waiters import wake

# Items buffered per upload stream before the connection stops reading (ASP.NET Core: 10);
# the default of HubOptions.stream_buffer_capacity (--stream-buffer-capacity).
STREAM_BUFFER_CAPACITY = 10


class UploadStream:
    """An async iterator fed by the client's StreamItem messages for one stream id."""

    __slots__ = ("stream_id", "capacity", "_items", "_waiter", "_space", "_done", "_error")

    def __init__(self, stream_id: str, capacity: int = STREAM_BUFFER_CAPACITY) -> None:
        self.stream_id = stream_id
        #: Items held before ``put`` waits (and with it the connection's reading).
        self.capacity = max(1, capacity)
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._done = False
        self._error: Exception | None = None

    def __aiter__(self) -> UploadStream:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        item = self._items.popleft()
        self._space = wake(self._space)
        return item

    async def put(self, item: Any) -> None:
        """Add an item; waits while the buffer is full (back-pressure on the client)."""
        while len(self._items) >= self.capacity and not self._done:
            space = self._space = asyncio.get_running_loop().create_future()
            await space
        if self._done:
            return
        self._items.append(item)
        self._waiter = wake(self._waiter)

    def complete(self, error: str | Exception | None = None) -> None:
        """End the stream: the client's error text, or an exception to raise in the reader."""
        if self._done:
            return
        self._done = True
        if isinstance(error, str):
            self._error = HubException(error)
        elif error is not None:
            self._error = error
        self._waiter = wake(self._waiter)
        self._space = wake(self._space)

    @property
    def done(self) -> bool:
        """True once the stream has ended."""
        return self._done


class StreamTracker:
    """The streams of one connection: server-to-client streams running, their cancels, the
    upload streams open, and the invocations reading uploads (which run alongside)."""

    __slots__ = ("running", "_cancelled", "uploads", "_readers")

    def __init__(self) -> None:
        #: Server-to-client streams running: invocation id -> its task.
        self.running: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] | None = None
        #: Upload streams open: stream id -> the stream.
        self.uploads: dict[str, UploadStream] = {}
        # Invocations that read uploads; held here so they run to their end.
        self._readers: set[asyncio.Task[None]] = set()

    # -- server-to-client streams ------------------------------------------------------------

    def start(self, invocation_id: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run a stream; it is tracked until it ends (an eager task may end at once)."""
        task = start_task(coro)
        if not task.done():
            self.running[invocation_id] = task

    def cancel(self, invocation_id: str) -> None:
        """The client cancelled a stream (an unknown id is ignored)."""
        task = self.running.get(invocation_id)
        if task is not None:
            if self._cancelled is None:
                self._cancelled = set()
            self._cancelled.add(invocation_id)
            task.cancel()

    def cancelled_by_client(self, invocation_id: str) -> bool:
        """True when the client cancelled this stream."""
        cancelled = self._cancelled
        return cancelled is not None and invocation_id in cancelled

    def ended(self, invocation_id: str) -> None:
        """A stream has ended: forget it."""
        self.running.pop(invocation_id, None)
        if self._cancelled:
            self._cancelled.discard(invocation_id)

    # -- uploads -------------------------------------------------------------------------------

    def open_uploads(
        self,
        args: Sequence[Any],
        positions: Sequence[int],
        stream_ids: Iterable[str],
        capacity: int = STREAM_BUFFER_CAPACITY,
    ) -> list[Any]:
        """``args`` with a new UploadStream (buffering ``capacity`` items) inserted at each
        stream parameter's position."""
        result = list(args)
        for position, stream_id in zip(positions, stream_ids, strict=True):
            previous = self.uploads.pop(stream_id, None)
            if previous is not None:  # a reused id replaces (and ends) the old stream
                previous.complete("Stream ID reused by the client.")
            upload = UploadStream(stream_id, capacity)
            self.uploads[stream_id] = upload
            result.insert(position, upload)
        return result

    def close_uploads(self, stream_ids: Iterable[str]) -> None:
        """The method returned: end its upload streams and drop later items for them."""
        for stream_id in stream_ids:
            upload = self.uploads.pop(stream_id, None)
            if upload is not None:
                upload.complete()

    async def feed(self, stream_id: str, item: Any) -> None:
        """An item from the client for an open upload (others are dropped)."""
        upload = self.uploads.get(stream_id)
        if upload is not None:
            await upload.put(item)

    def finish_upload(self, stream_id: str, error: str | None) -> bool:
        """The client ended an upload (with ``error``, if any); False for no such upload."""
        upload = self.uploads.pop(stream_id, None)
        if upload is None:
            return False
        upload.complete(error)
        return True

    def run_reader(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an invocation that reads uploads beside the connection's queue."""
        task = start_task(coro)
        if not task.done():
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

    @property
    def open_count(self) -> int:
        """Server-to-client streams running and upload streams open, together."""
        return len(self.running) + len(self.uploads)

    async def uploads_read(self) -> None:
        """Wait until the invocations reading uploads have returned."""
        while self._readers:
            await asyncio.wait(set(self._readers))

    @property
    def readers(self) -> frozenset[asyncio.Task[None]]:
        """The invocations reading uploads that are still running."""
        return frozenset(self._readers)

    def abort(self) -> None:
        """The connection ended: streams to the client stop (their generators are closed);
        uploads fail, so methods reading them stop instead of taking a cut stream as whole."""
        for task in self.running.values():
            task.cancel()
        for upload in self.uploads.values():
            upload.complete(ConnectionAbortedError("The underlying connection was closed."))
        self.uploads.clear()
