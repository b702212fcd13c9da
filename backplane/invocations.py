"""One connection's non-streaming invocations: run one at a time, in arrival order, with
back-pressure on the transport when too many wait.

An invocation that arrives while none runs or waits starts at once, in the receive path's
turn (:func:`backplane.eager.first_step`): a hub method that ends without waiting has its
Completion written before the receive path reads on, with no task switch. One that waits
goes on in the queue's runner task, and later invocations queue behind it exactly as they
queue behind one the runner started; the receive path never waits for a hub method (one may
wait for its own caller's client result, or read an upload, which needs it to read on).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .eager import Resumed, first_step
from .protocol import InvocationMessage
from .tasks import start_task
from .waiters import wake

logger = logging.getLogger("hubplane.connection")

# Non-streaming invocations queued per connection before the transport stops reading.
MAX_QUEUED_INVOCATIONS = 64
# A runner parked this long ends (a parked task costs about a kilobyte); the next
# invocation makes a new one. A client that calls more often keeps it.
RUNNER_IDLE_SECONDS = 10.0


def _wake(parked: asyncio.Future[bool], end: bool) -> None:
    """Wake the parked runner (to end, when ``end``); a runner cancelled while parked has
    its future cancelled already, and wakes with the cancellation."""
    if not parked.done():
        parked.set_result(end)


class _Owner(Protocol):
    """What the queue needs of its connection."""

    @property
    def closing(self) -> bool: ...

    @property
    def log_name(self) -> str: ...


class InvocationQueue:
    """Invocations waiting for their turn, and the runner task that runs them.

    The runner is made with the first invocation; between invocations it is parked, and an
    invocation that finds it parked (or made and not yet started) and nothing queued runs
    eagerly, as the runner (see the module's docstring). It ends once the connection is
    closing and nothing waits, or when it was parked for ``RUNNER_IDLE_SECONDS``.
    """

    __slots__ = (
        "_owner",
        "_run",
        "_queue",
        "_space",
        "_runner",
        "_context",
        "_parked",
        "_resumed",
        "_idle",
        "_stepping",
        "_fresh",
    )

    def __init__(
        self, owner: _Owner, run: Callable[[InvocationMessage], Coroutine[Any, Any, None]]
    ) -> None:
        self._owner = owner
        self._run = run
        self._queue: deque[InvocationMessage] = deque()
        self._space: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._context: contextvars.Context | None = None
        # Set while the runner is parked: resolving it wakes the runner (True: to end).
        self._parked: asyncio.Future[bool] | None = None
        # A coroutine the eager step left waiting, what it waits on, and what to throw in
        # when the runner goes on with it.
        self._resumed: tuple[Coroutine[Any, Any, None], Any, BaseException | None] | None = None
        self._idle: asyncio.Future[None] | None = None  # waited on by idle()
        self._stepping = False
        self._fresh = False

    def put(self, message: InvocationMessage) -> asyncio.Future[None] | None:
        """Run or queue ``message``; a future to wait for when the queue is full (else None)."""
        queue = self._queue
        runner = self._runner
        if runner is None or runner.done():
            runner = self._start_runner()
        parked = self._parked
        if not queue and not self._stepping and not self._owner.closing:
            if parked is not None or self._fresh:
                # Nothing runs or waits: run it now, as the runner.
                self._step(message, runner, parked)
                return None
        queue.append(message)
        if parked is not None:
            self._parked = None
            _wake(parked, False)
        if len(queue) >= MAX_QUEUED_INVOCATIONS:
            space = self._space = asyncio.get_running_loop().create_future()
            return space
        return None

    def _start_runner(self) -> asyncio.Task[None]:
        context = self._context = contextvars.copy_context()
        self._parked = None
        pending = self._resumed
        if pending is not None:
            # Handed over, and its runner was cancelled before it went on (the method
            # cancelled its own task): the new runner goes on with it, cancelled.
            self._resumed = (pending[0], pending[1], asyncio.CancelledError())
        # Made and not yet run: when nothing waits in it, a call may run eagerly as it.
        self._fresh = pending is None
        runner = self._runner = start_task(self._serve(), context)
        runner.add_done_callback(self._runner_ended)
        return runner

    def _runner_ended(self, runner: asyncio.Task[None]) -> None:
        resumed = self._resumed
        if runner is not self._runner or resumed is None:
            return
        if self._owner.closing:
            self._resumed = None
            resumed[0].close()
        else:
            self._start_runner()

    def _step(
        self,
        message: InvocationMessage,
        runner: asyncio.Task[None],
        parked: asyncio.Future[bool] | None,
    ) -> None:
        """Run ``message`` now, as the parked runner; hand it to the runner if it waits."""
        coro = self._run(message)
        context = self._context
        assert context is not None
        self._stepping = True
        try:
            done, yielded = first_step(runner.get_loop(), coro, runner, context)
        except (Exception, asyncio.CancelledError):  # as the runner would: log, go on
            logger.exception("%s: dispatch failed", self._owner.log_name)
            return
        finally:
            self._stepping = False
        if not done:
            self._resumed = (coro, yielded, None)
            self._fresh = False
            if parked is not None:
                self._parked = None
                _wake(parked, False)

    def _retire(self, parked: asyncio.Future[bool]) -> None:
        """The runner was parked for ``RUNNER_IDLE_SECONDS``: let it end."""
        if self._parked is parked and not self._stepping:
            self._parked = None
            _wake(parked, True)

    async def _serve(self) -> None:
        """The runner: go on with a method the eager step left waiting, run what is queued
        one at a time, in order; park when there is nothing; end once the connection is
        closing and nothing waits (what is queued then is dropped, as :meth:`clear` does)."""
        queue = self._queue
        owner = self._owner
        run = self._run
        loop = asyncio.get_running_loop()
        self._fresh = False
        try:
            while True:
                resumed = self._resumed
                if resumed is not None:
                    self._resumed = None
                    try:
                        await Resumed(*resumed)
                    except Exception:
                        logger.exception("%s: dispatch failed", owner.log_name)
                    continue
                if queue and not owner.closing:
                    message = queue.popleft()
                    self._space = wake(self._space)
                    try:
                        await run(message)
                    except Exception:  # never let one invocation stop the connection's dispatch
                        logger.exception("%s: dispatch failed", owner.log_name)
                    continue
                if owner.closing:
                    return
                self._idle = wake(self._idle)
                parked = self._parked = loop.create_future()
                timer = loop.call_later(RUNNER_IDLE_SECONDS, self._retire, parked)
                try:
                    if await parked and not queue and self._resumed is None:
                        return  # idle for long: a new runner is made when needed
                except asyncio.CancelledError as exc:
                    # Cancelled (asyncio.timeout in a method the eager step ran, say) after
                    # the eager step handed a method over and before it went on: the method
                    # gets the cancellation, as it would have had it in the runner.
                    resumed = self._resumed
                    if resumed is None:
                        raise
                    self._resumed = None
                    try:
                        await Resumed(resumed[0], resumed[1], exc)
                    except Exception:
                        logger.exception("%s: dispatch failed", owner.log_name)
                finally:
                    timer.cancel()
        finally:
            self._parked = None
            self._idle = wake(self._idle)

    @property
    def busy(self) -> bool:
        """True while an invocation waits or runs."""
        if self._queue:
            return True
        runner = self._runner
        return runner is not None and self._parked is None and not runner.done()

    async def idle(self) -> None:
        """Wait until the invocations received so far have answered (or the connection ends)."""
        while not self._owner.closing and self.busy:
            waiter = self._idle
            if waiter is None:
                waiter = self._idle = asyncio.get_running_loop().create_future()
            await waiter

    def clear(self) -> None:
        """Drop what waits (the connection ended); a running invocation finishes, and the
        runner ends after it."""
        self._queue.clear()
        self._space = wake(self._space)
        parked = self._parked
        if parked is not None:
            self._parked = None
            _wake(parked, False)
