"""Client-to-server (upload) streams: what a hub method's ``AsyncIterator[T]`` parameter gets."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .errors import HubException
from .waiters import wake

# Items buffered per upload stream before the connection stops reading (ASP.NET Core: 10).
STREAM_BUFFER_CAPACITY = 10


class UploadStream:
    """An async iterator fed by the client's StreamItem messages for one stream id."""

    __slots__ = ("stream_id", "_items", "_waiter", "_space", "_done", "_error")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
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
        while len(self._items) >= STREAM_BUFFER_CAPACITY and not self._done:
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
