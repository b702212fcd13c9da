"""Startup, the ticker, drain and shutdown of one app's hubs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backplane import HubConnectionHandler

    from .admission import NodeAdmission
    from .handover import Handover
    from .metrics import Metrics
    from .nosticky import NoSticky
    from .registry import ConnectionRegistry
    from .sessions import HttpSessions
    from .tasks import BackgroundTasks

logger = logging.getLogger("hubplane.server")

# How long a draining node waits for a long-polling client to poll for its Close message.
LONG_POLL_GRACE = 1.0
# How long shutdown waits for connections' tear-downs before it cancels them.
TEARDOWN_TIMEOUT = 5.0


class Lifecycle:
    """Starts the hubs and their timers, drains the node, stops everything it started."""

    def __init__(
        self,
        handlers: Sequence[HubConnectionHandler],
        admission: NodeAdmission,
        registry: ConnectionRegistry,
        sessions: HttpSessions,
        nosticky: NoSticky,
        tasks: BackgroundTasks,
        metrics: Metrics | None,
        disconnect_timeout: float,
        run_hooks: Callable[[], Awaitable[None]],
        handover: Handover | None = None,
    ) -> None:
        self.handlers = list(handlers)
        self.admission = admission
        self.registry = registry
        self.sessions = sessions
        self.nosticky = nosticky
        self.tasks = tasks
        self.metrics = metrics
        self.disconnect_timeout = disconnect_timeout
        # The user's startup hooks, run last (they may use the hubs).
        self.run_hooks = run_hooks
        # Stateful connections move to other nodes when this one drains (with Redis).
        self.handover = handover
        self.started = False
        self._ticker: asyncio.Task[None] | None = None
        # Called about once a second by the ticker (the admin API's figures).
        self.every_second: list[Callable[[], None]] = []

    async def startup(self) -> None:
        """Start lifetime managers, no-sticky forwarding, timers, then the startup hooks."""
        for handler in self.handlers:
            await handler.lifetime.start()
        await self.nosticky.start()
        if self.handover is not None:
            await self.handover.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        await self.run_hooks()
        self.started = True

    async def drain(self, timeout: float = 5.0) -> None:
        """Refuse new connections and close every live one; clients may reconnect elsewhere.

        Readiness turns false at once. Invocations already received answer, then every
        client gets a Close with ``allowReconnect`` after what is queued for it. Returns when
        every connection has ended or after ``timeout`` seconds.
        """
        self.admission.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Stateful connections lose their socket without a Close: their clients resume on
        # other nodes, which take the connections over from this one meanwhile.
        moving = self.handover.drop_stateful() if self.handover is not None else []
        staying = {id(r.connection) for r in moving}
        # A long-polling client gets its Close on its next poll (the clients poll again at
        # once); one that has not come back for it within a moment is ended.
        stragglers = loop.call_later(
            min(LONG_POLL_GRACE, timeout / 2), self.sessions.end_idle_polls
        )
        try:
            await asyncio.gather(
                *(
                    handler.close_all(timeout, skip=lambda c: id(c) in staying)
                    for handler in self.handlers
                )
            )
        finally:
            stragglers.cancel()
        if self.handover is not None and moving:
            await self.handover.wait_moved(moving, max(0.0, deadline - loop.time()))

    async def shutdown(self) -> None:
        """Close every connection (clients may reconnect elsewhere) and stop."""
        await self.drain()
        # Long-polling connections whose client did not come back for their Close message.
        self.sessions.end_polls()
        # Their tear-downs, and those of reconnect timers and DELETEs, get a while to finish;
        # whatever is left then is cancelled rather than left running past the app.
        await self.tasks.close(TEARDOWN_TIMEOUT)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.nosticky.stop()
        if self.handover is not None:
            self.handover.stop()
        for handler in self.handlers:
            await handler.lifetime.stop()
        self.started = False

    async def _tick_forever(self) -> None:
        """Keep-alives, timeouts and expiries of the whole node. Each step is on its own: one
        that raises is logged and the others (and the next ticks) run all the same."""
        loop = asyncio.get_running_loop()
        handlers = self.handlers
        period = min([h.timer_resolution() for h in handlers] + [1.0])
        metrics = self.metrics
        next_metrics = loop.time()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for handler in handlers:
                _step(handler.tick, now, what="the connection timers")
            _step(self.registry.expire, self.disconnect_timeout, what="expiring negotiations")
            if now >= next_metrics:
                next_metrics = now + 1.0
                if metrics is not None:
                    _step(metrics.tick, what="the metrics")
                for callback in self.every_second:
                    _step(callback, what="a once-a-second task")


def _step(step: Callable[..., object], *args: Any, what: str) -> None:
    """Run one step of the ticker; a failure is logged, not raised."""
    try:
        step(*args)
    except Exception:
        logger.exception("the ticker: %s failed", what)
