"""What a transport needs from the app, as Protocols: no transport names the app.

The app hands each transport small objects that satisfy these: the admission state (draining,
the identity hook), the locator (this node's registry, no-sticky lookups), the session store of
SSE and long polling, and an owner for the tasks a transport starts from callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from backplane import HubConnection, User

    from ..auth import Authenticator
    from ..registry import ConnectionRecord, ConnectionRegistry
    from ..tokens import TokenSigner


class Admission(Protocol):
    """Whether the node takes new connections now, and the hook that names their user."""

    @property
    def draining(self) -> bool:
        """True once the node refuses new connections (it is about to stop)."""
        ...

    @property
    def authenticator(self) -> Authenticator | None:
        """The identity hook given to ``create_app`` (None: anonymous users)."""
        ...


class Spawner(Protocol):
    """An owner for tasks started from callbacks; it cancels them when the app stops."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task the owner holds."""
        ...


class Locator(Protocol):
    """Finds the record of a connection token: here, or (no sticky sessions) on another node."""

    @property
    def registry(self) -> ConnectionRegistry:
        """This node's negotiated and live connections, by token."""
        ...

    @property
    def signer(self) -> TokenSigner | None:
        """Checks signed tokens (``--token-secret``); None without no-sticky routing."""
        ...

    async def locate(self, token: str, path: str, start: bool) -> ConnectionRecord | str | int:
        """The record to serve here, the id of the owning node, or an HTTP status to refuse."""
        ...


class SessionStore(Spawner, Protocol):
    """The table that holds SSE and long-polling sessions, as the sessions see it."""

    @property
    def disconnect_timeout(self) -> float:
        """How long an inactive long-polling connection lives (``--disconnect-timeout``)."""
        ...

    def discard(self, token: str) -> None:
        """Forget a connection: its record and its session; the token answers 404 from now on."""
        ...

    def cut_off(self) -> bool:
        """True while this node's clients may be unable to reach it (no sticky sessions and
        Redis down: their requests landing elsewhere cannot be forwarded); idle long-polling
        connections are then kept rather than ended."""
        ...


class Mover(Protocol):
    """Stateful connections moving between nodes (``handover.py``), as WebSockets see it."""

    def remember(self, record: ConnectionRecord, user: User | None) -> None:
        """Note a stateful connection where any node finds it when its client comes back."""
        ...

    def closing(self, record: ConnectionRecord) -> None:
        """The server ends the connection: its resume entry goes before its Close does."""
        ...

    async def take_up(
        self,
        token: str,
        path: str,
        user: User | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> tuple[ConnectionRecord, HubConnection] | int:
        """Take the connection of ``token`` over from the node holding it; a status if not."""
        ...
