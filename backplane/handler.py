"""Per-hub state shared by its connections: method table, lifetime manager, options."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .authorization import allowed
from .clients import GroupManager, HubContext, client_interface, hub_client_type
from .connection import HubConnection
from .deadlines import Deadlines
from .dispatch import HubDescriptor
from .dispatcher import HubDispatcher
from .filters import FilterPipelines, FilterSpec, instantiate
from .hub import Hub
from .lifetime.base import HubLifetimeManager
from .lifetime.memory import MemoryLifetimeManager

# Re-exported: backplane.handler.HubOptions, HubStats and OUTCOMES keep working.
from .options import OUTCOMES as OUTCOMES
from .options import HubOptions as HubOptions
from .options import HubStats as HubStats
from .timers import CoarseClock
from .user import User

logger = logging.getLogger("hubplane.handler")

#: Seconds a drain keeps for the Closes after invocations and uploads have run.
CLOSE_ALLOWANCE = 2.0


class HubConnectionHandler:
    """Runs the connections of one hub type."""

    def __init__(
        self,
        hub_type: type[Hub[Any]],
        options: HubOptions | None = None,
        lifetime: HubLifetimeManager | None = None,
        filters: Sequence[FilterSpec] = (),
    ) -> None:
        self.hub_type = hub_type
        self.descriptor = HubDescriptor(hub_type)
        self.dispatcher = HubDispatcher(self)
        self.options = options or HubOptions()
        self.lifetime = lifetime if lifetime is not None else MemoryLifetimeManager()
        self.lifetime.client_result_timeout = self.options.client_result_timeout
        self.lifetime.max_groups_per_connection = self.options.max_groups_per_connection
        self.group_manager = GroupManager(self.lifetime)
        # A typed hub's client protocol (Hub[ChatClient]): proxies send its methods by name.
        self.client_interface = client_interface(hub_client_type(hub_type))
        self.context: HubContext[Any] = HubContext(hub_type, self.lifetime, self.client_interface)
        self.connections: dict[str, HubConnection] = {}
        # When each connection's timers are next due; the time as of the last tick (plus one
        # tick), which connections stamp on what they receive.
        self._deadlines: Deadlines[HubConnection] = Deadlines()
        self.clock = CoarseClock()
        # Global filters first, then the hub's own (its ``filters`` class attribute).
        self.filters = instantiate([*filters, *getattr(hub_type, "filters", ())])
        self.pipelines = FilterPipelines(self.filters)
        self.stats = HubStats()

    async def refuses(self, user: User | None) -> int | None:
        """The HTTP status refusing ``user`` this hub (``@authorize`` on the class), or None.

        401 when there is no user, 403 when there is one that the rules do not admit.
        """
        rules = self.descriptor.hub_rules
        if not rules or await allowed(rules, user):
            return None
        return 401 if user is None else 403

    def add_connection(self, connection: HubConnection) -> None:
        """Register a new connection; its timers run from the next tick."""
        self.connections[connection.connection_id] = connection
        self._deadlines.soon(connection)

    def tick(self, now: float) -> None:
        """Run the timers of the connections that are due (not every connection: an idle one
        is due once per keep-alive interval)."""
        deadlines = self._deadlines
        deadlines.resolution = resolution = self.timer_resolution()
        self.clock.now = now + resolution
        for connection in deadlines.pop_due(now):
            try:
                due = connection.tick(now)
            except Exception:  # one broken connection must not stop the timers of the rest
                logger.exception("%s: timer failed", connection.log_name)
                due = now
            if due is not None:
                deadlines.schedule(connection, due, now)

    def timer_resolution(self) -> float:
        """How often :meth:`tick` should run to honour the configured timers."""
        o = self.options
        shortest = min(o.keepalive_interval, o.client_timeout, o.handshake_timeout)
        return max(0.05, min(1.0, shortest / 4))

    async def close_all(
        self, timeout: float = 5.0, skip: Callable[[HubConnection], bool] | None = None
    ) -> None:
        """Close every connection, letting a reconnect go elsewhere, within ``timeout`` seconds.

        Invocations already received, and those reading uploads, answer first (until
        ``CLOSE_ALLOWANCE`` before the deadline, or half the time when that is shorter), then
        each client gets a Close with ``allowReconnect``; what is queued for it goes out first.
        Returns when every connection has ended, or when the time is up. Connections that
        ``skip`` names are left alone (they move to another node).
        """
        conns = [c for c in self.connections.values() if skip is None or not skip(c)]
        if not conns:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        finishing = [asyncio.ensure_future(c.finish_and_close()) for c in conns]
        finish_by = timeout - min(timeout / 2, CLOSE_ALLOWANCE)
        _, late = await asyncio.wait(finishing, timeout=finish_by)
        for task in late:
            task.cancel()
        for connection in conns:
            connection.close(None, allow_reconnect=True)  # those whose invocations ran late
        ending = [asyncio.ensure_future(c.closed.wait()) for c in conns]
        _, pending = await asyncio.wait(ending, timeout=max(0.01, deadline - loop.time()))
        for waiter in pending:
            waiter.cancel()
