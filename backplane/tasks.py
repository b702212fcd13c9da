"""Starting the tasks of a connection (invocations, streams) as cheaply as the loop allows, and
awaiting what hook code returns."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

_eager_factory = getattr(asyncio, "eager_task_factory", None)


def start_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task for ``coro``, started eagerly where Python offers it (3.12+)."""
    loop = asyncio.get_running_loop()
    if _eager_factory is not None:
        task: asyncio.Task[None] = _eager_factory(loop, coro)
        return task
    return loop.create_task(coro)


async def maybe_await(value: Any) -> Any:
    """Await ``value`` when it is awaitable (hooks may be written sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value
