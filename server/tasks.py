"""An owner for the background tasks the server starts from callbacks (timers, DELETEs).

A task nobody holds may be collected mid-run, and one nobody cancels outlives the app: each
app creates one :class:`BackgroundTasks` and closes it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    """Tasks kept until they finish; :meth:`close` waits a while for them, then cancels the rest."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task held here until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 0.0) -> None:
        """Give the tasks up to ``timeout`` seconds to finish, then cancel and await the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Again while time is left: a finishing task may have started another (a tear-down
        # that ends a detached connection).
        while self._tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=remaining)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        for task in left:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
