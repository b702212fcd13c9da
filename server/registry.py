"""Negotiated connections, looked up by their secret token."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from backplane import HubConnection, User

    from .tokens import TokenClaims, TokenSigner


def new_id() -> str:
    """128 random bits, base64url without padding (22 characters), as ASP.NET Core mints."""
    return secrets.token_urlsafe(16)


class ConnectionRecord:
    """What negotiate created: ids, the user, and later the live connection."""

    __slots__ = (
        "connection_id",
        "token",
        "hub_path",
        "user",
        "created",
        "_connection",
        "_pending",
        "transport",
        "stateful",
        "run_task",
        "expiry",
        "owned",
        "drop",
        "moving",
        "moved",
        "revived",
    )

    def __init__(self, connection_id: str, token: str, hub_path: str, user: User | None) -> None:
        self.connection_id = connection_id
        self.token = token
        self.hub_path = hub_path
        self.user = user
        self.created = time.monotonic()
        self._connection: HubConnection | None = None
        # The registry's records still waiting for their first transport, while this is one.
        self._pending: dict[str, ConnectionRecord] | None = None
        self.transport: str | None = None
        # Stateful reconnect: negotiated for this connection; the task running its current
        # WebSocket (to take over from a half-open one); the timer ending a detached one.
        self.stateful = False
        self.run_task: asyncio.Task[Any] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        # No sticky sessions: this node claimed the connection in Redis (and must release it).
        self.owned = False
        # Moving between nodes (handover.py): drops the WebSocket without a close frame; a
        # handover is under way; the connection went on on another node.
        self.drop: Callable[[], None] | None = None
        self.moving = False
        self.moved = False
        # Taken up from its record after the node holding it died (--durable-resume).
        self.revived = False

    @property
    def connection(self) -> HubConnection | None:
        """The live connection, once a transport has started it."""
        return self._connection

    @connection.setter
    def connection(self, connection: HubConnection | None) -> None:
        self._connection = connection
        if connection is not None and self._pending is not None:
            self._pending.pop(self.token, None)  # no longer waiting for a transport
            self._pending = None


class ConnectionRegistry:
    """Token -> record for every negotiated or live connection of this node."""

    def __init__(self) -> None:
        self.records: dict[str, ConnectionRecord] = {}
        #: The records no transport has started yet, oldest first (negotiate bounds them, and
        #: the expiry walks them from the front instead of every record).
        self.pending: dict[str, ConnectionRecord] = {}
        # With --token-secret: mints signed tokens that any node can check (no sticky sessions).
        self.signer: TokenSigner | None = None
        # Called when a record that ran (or claimed) a connection here is removed, unless the
        # connection moved to another node.
        self.removed_hooks: list[Callable[[ConnectionRecord], None]] = []
        # Signed tokens whose connection ended here, and when (a token starts one connection).
        self.ended: dict[str, float] = {}

    def create(
        self,
        hub_path: str,
        user: User | None,
        negotiate_version: int,
        stateful: bool = False,
    ) -> ConnectionRecord:
        """A new record; with negotiate version 0 the token is the connection id."""
        signer = self.signer
        if signer is not None and negotiate_version == 0:
            # The id doubles as the token, so the id itself is the signed token.
            connection_id = token = signer.mint("", hub_path, 0, False)
        else:
            connection_id = new_id()
            if signer is not None:
                token = signer.mint(connection_id, hub_path, negotiate_version, stateful)
            else:
                token = new_id() if negotiate_version >= 1 else connection_id
        record = ConnectionRecord(connection_id, token, hub_path, user)
        record.stateful = stateful
        self._add(record)
        return record

    def _add(self, record: ConnectionRecord) -> None:
        self.records[record.token] = record
        self.pending[record.token] = record
        record._pending = self.pending

    def adopt(self, token: str, claims: TokenClaims) -> ConnectionRecord:
        """The record of a connection negotiated elsewhere (or the one made here)."""
        record = self.records.get(token)
        if record is None:
            record = ConnectionRecord(claims.connection_id or token, token, claims.hub_path, None)
            record.stateful = claims.stateful
            self._add(record)
        return record

    def moved_in(
        self, token: str, connection_id: str, hub_path: str, user: User | None
    ) -> ConnectionRecord:
        """The record of a stateful WebSocket connection taken over from another node."""
        record = ConnectionRecord(connection_id, token, hub_path, user)
        record.stateful = True
        record.transport = "WebSockets"
        self._add(record)
        return record

    def get(self, token: str) -> ConnectionRecord | None:
        """The record for ``token``, or None."""
        return self.records.get(token)

    def remove(self, token: str) -> None:
        """Forget a record."""
        record = self.records.pop(token, None)
        self.pending.pop(token, None)
        if record is None:
            return
        if record.connection is not None and self.signer is not None:
            self.ended[token] = time.monotonic()
        if (record.connection is not None or record.owned) and not record.moved:
            for hook in self.removed_hooks:
                hook(record)

    def ended_recently(self, token: str) -> bool:
        """True when a connection with this token ran here and ended (tokens are not reused)."""
        return token in self.ended

    def expire(self, max_idle: float, now: float | None = None) -> int:
        """Drop records that never got a transport within ``max_idle`` seconds.

        Only the oldest records are looked at (both tables are in the order of their times),
        not every record: this runs every tick.
        """
        now = time.monotonic() if now is None else now
        stale = []
        for token, record in self.pending.items():
            if now - record.created <= max_idle:
                break
            stale.append(token)
        for token in stale:
            self.pending.pop(token)
            gone = self.records.pop(token, None)
            if gone is None:
                continue
            gone._pending = None
            if gone.owned:  # claimed in Redis but never started: release it
                for hook in self.removed_hooks:
                    hook(gone)
        # Ended tokens are remembered until they are too old to start anything anyway.
        ended = self.ended
        while ended:
            token = next(iter(ended))
            if now - ended[token] <= max_idle + 60:
                break
            del ended[token]
        return len(stale)
