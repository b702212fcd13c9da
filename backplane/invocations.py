"""One connection's non-streaming invocations: run one at a time, in arrival order, with
back-pressure on the transport when too many wait."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from .protocol import InvocationMessage
from .tasks import start_task
from .waiters import wake

logger = logging.getLogger("hubplane.connection")

# Non-streaming invocations queued per connection before the transport stops reading.
MAX_QUEUED_INVOCATIONS = 64


class _Owner(Protocol):
    """What the queue needs of its connection."""

    @property
    def closing(self) -> bool: ...

    @property
    def log_name(self) -> str: ...


class InvocationQueue:
    """Invocations waiting for their turn, and the task that runs them."""

    __slots__ = ("_owner", "_run", "_queue", "_space", "_runner")

    def __init__(self, owner: _Owner, run: Callable[[InvocationMessage], Awaitable[None]]) -> None:
        self._owner = owner
        self._run = run
        self._queue: deque[InvocationMessage] = deque()
        self._space: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    def put(self, message: InvocationMessage) -> asyncio.Future[None] | None:
        """Queue ``message``; a future to wait for when the queue is full (else None)."""
        queue = self._queue
        queue.append(message)
        runner = self._runner
        if runner is None or runner.done():
            self._runner = start_task(self._run_all())
        if len(queue) >= MAX_QUEUED_INVOCATIONS:
            space = self._space = asyncio.get_running_loop().create_future()
            return space
        return None

    async def _run_all(self) -> None:
        """Run queued invocations one at a time, in order; ends when the queue is empty.

        A new run starts when the next invocation arrives. Where the event loop offers
        eager tasks (Python 3.12+), an invocation that never waits runs to its end right
        away, with no task switch.
        """
        queue = self._queue
        owner = self._owner
        run = self._run
        while queue and not owner.closing:
            message = queue.popleft()
            self._space = wake(self._space)
            try:
                await run(message)
            except Exception:  # never let one invocation stop the connection's dispatch
                logger.exception("%s: dispatch failed", owner.log_name)

    @property
    def busy(self) -> bool:
        """True while an invocation waits or runs."""
        runner = self._runner
        return bool(self._queue) or (runner is not None and not runner.done())

    async def idle(self) -> None:
        """Wait until the invocations received so far have answered (or the connection ends)."""
        while not self._owner.closing:
            runner = self._runner
            if runner is None or runner.done():
                return
            await asyncio.wait((runner,))

    def clear(self) -> None:
        """Drop what waits (the connection ended); a running invocation finishes."""
        self._queue.clear()
        self._space = wake(self._space)
