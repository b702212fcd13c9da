"""The SSE and long-polling sessions of this node, by connection token.

WebSockets need no such table (a socket is one request); SSE and long polling take one
connection over many requests, and each request finds its session here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .transports.longpolling import LongPollingSession

if TYPE_CHECKING:
    from .registry import ConnectionRegistry
    from .tasks import BackgroundTasks
    from .transports.http import HttpSession


class HttpSessions:
    """Token -> SSE or long-polling session; the ``SessionStore`` the transports see."""

    def __init__(
        self, registry: ConnectionRegistry, disconnect_timeout: float, tasks: BackgroundTasks
    ) -> None:
        self.registry = registry
        self.disconnect_timeout = disconnect_timeout
        self.sessions: dict[str, HttpSession] = {}
        # Owns the tear-downs started from timers and DELETEs (closed at shutdown).
        self.tasks = tasks
        # Whether requests for this node's connections cannot be forwarded to it now.
        self.unreachable: Callable[[], bool] = lambda: False

    def get(self, token: str) -> HttpSession | None:
        """The session of ``token``, or None."""
        return self.sessions.get(token)

    def add(self, token: str, session: HttpSession) -> None:
        """Serve ``token``'s later requests with ``session``."""
        self.sessions[token] = session

    def discard(self, token: str) -> None:
        """Forget a connection: its record and its session."""
        self.registry.remove(token)
        self.sessions.pop(token, None)

    def cut_off(self) -> bool:
        """True while requests landing on other nodes cannot reach this one (see base.py)."""
        return self.unreachable()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a tear-down as a task the app's task owner holds."""
        return self.tasks.spawn(coro)

    def end_idle_polls(self) -> None:
        """End every long-polling connection that has no poll in progress (draining)."""
        for session in list(self.sessions.values()):
            if isinstance(session, LongPollingSession) and session.current is None:
                session.end()

    def end_polls(self) -> list[asyncio.Task[None]]:
        """End every long-polling connection; returns the tasks tearing them down."""
        return [
            task
            for session in list(self.sessions.values())
            if isinstance(session, LongPollingSession) and (task := session.end()) is not None
        ]
