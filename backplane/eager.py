"""Running a coroutine's first step in the caller's turn, as the task that goes on with it.

Python 3.11 has no eager tasks: a task created for a hub method runs from the next turn of
the event loop, a task switch and a loop turn per call, although most hub methods end
without ever waiting. :func:`first_step` runs the coroutine at once instead, until it ends or
first waits. While it runs, ``asyncio.current_task()`` is the task that will go on with it,
and it runs in that task's context, so code that captures its task (``asyncio.timeout``)
or sets context variables sees what it would in that task. :class:`Resumed` lets that
task go on with a coroutine that waits: the task awaits it, and it passes every wake-up,
result and exception (cancellation too) through to the coroutine.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import tasks as _tasks
from collections.abc import Coroutine, Generator
from typing import Any

_current = _tasks.current_task
_enter = _tasks._enter_task
_leave = _tasks._leave_task
# Where Python keeps each loop's current task in a plain dict (3.11 to 3.13), the swap is two
# dict writes; elsewhere, the checked enter and leave functions.
# (Python 3.14 keeps the current task elsewhere: the dict is then not what current_task reads.)
_CURRENT: dict[Any, Any] | None = getattr(_tasks, "_current_tasks", None)
if type(_CURRENT) is not dict or sys.version_info >= (3, 14):
    _CURRENT = None


def first_step(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    task: asyncio.Task[Any],
    context: contextvars.Context,
) -> tuple[bool, Any]:
    """Run ``coro`` as ``task`` (in ``context``) until it ends or waits.

    Returns ``(True, None)`` when it ended, ``(False, yielded)`` when it waits on what it
    yielded (hand both to :class:`Resumed`). An exception it raises propagates. ``task``
    must not be running (a parked task).
    """
    current = _CURRENT
    if current is not None:
        outer = current.get(loop)
        current[loop] = task
        try:
            return False, context.run(coro.send, None)
        except StopIteration:
            return True, None
        finally:
            if outer is None:
                del current[loop]
            else:
                current[loop] = outer
    outer = _current(loop)
    if outer is not None:
        _leave(loop, outer)
    _enter(loop, task)
    try:
        return False, context.run(coro.send, None)
    except StopIteration:
        return True, None
    finally:
        _leave(loop, task)
        if outer is not None:
            _enter(loop, outer)


class Resumed:
    """An awaitable that goes on with a coroutine :func:`first_step` left waiting."""

    __slots__ = ("_coro", "_yielded", "_throw")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        yielded: Any,
        throw: BaseException | None = None,
    ) -> None:
        self._coro = coro
        self._yielded = yielded
        self._throw = throw  # the task was cancelled before it could go on: throw it in

    def __await__(self) -> Generator[Any, Any, Any]:
        return _resume(self._coro, self._yielded, self._throw)


def _resume(
    coro: Coroutine[Any, Any, Any], yielded: Any, throw: BaseException | None
) -> Generator[Any, Any, Any]:
    """Yield what ``coro`` waits on to the task; send or throw back what the task gets."""
    value = yielded
    if throw is not None:
        try:
            value = coro.throw(throw)
        except StopIteration as stop:
            return stop.value
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation, or an exception the task throws in
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value
