"""Starting the tasks of a connection (invocations, streams) as cheaply as the loop allows, and
awaiting what hook code returns."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Coroutine
from typing import Any

_eager_factory = getattr(asyncio, "eager_task_factory", None)


def start_task(
    coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None
) -> asyncio.Task[None]:
    """A task for ``coro`` (in ``context``, else a copy of the current one), started eagerly
    where Python offers it (3.12+)."""
    loop = asyncio.get_running_loop()
    if _eager_factory is not None:
        task: asyncio.Task[None] = _eager_factory(loop, coro, context=context)
        return task
    return loop.create_task(coro, context=context)


async def maybe_await(value: Any) -> Any:
    """Await ``value`` when it is awaitable (hooks may be written sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value
