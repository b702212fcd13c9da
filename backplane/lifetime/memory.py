"""The in-memory lifetime manager: one node, everything in process."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..presence import MemoryPresence
from ..protocol.messages import InvocationMessage
from .base import (
    TO_ALL,
    TO_GROUP,
    ClientConnection,
    HubLifetimeManager,
    SerializedMessage,
    close_many,
    write_many,
)
from .registry import ConnectionRegistry
from .results import ClientResults, not_found
from .usergroups import MemoryUserGroups, join_user_groups


class MemoryLifetimeManager(HubLifetimeManager):
    """Connections, groups and users of one hub on one node."""

    def __init__(self) -> None:
        self.registry = registry = ConnectionRegistry()
        # The registry's own dicts, bound here so a send reads them with no extra lookup.
        self.connections = registry.connections
        self.groups = registry.groups
        self.users = registry.users
        self.presence = MemoryPresence(registry)
        self.client_results = ClientResults()
        self.user_groups = MemoryUserGroups()

    # -- membership -------------------------------------------------------------------------

    async def on_connected(self, connection: ClientConnection) -> None:
        """Register a connection that completed its handshake; it joins its user's groups."""
        self.registry.add(connection)
        user = connection.user
        await join_user_groups(
            self.user_groups, connection, user.id if user is not None else None, self._join
        )

    async def _join(self, connection: ClientConnection, group: str) -> None:
        self.registry.join(connection, group, self.max_groups_per_connection)

    async def on_disconnected(self, connection: ClientConnection) -> None:
        """Forget a connection, its groups and its user membership."""
        self.registry.remove(connection)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add a connection to a group (unknown connections are ignored, as in ASP.NET Core)."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            self.registry.join(connection, group, self.max_groups_per_connection)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Remove a connection from a group."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            self.registry.leave(connection, group)

    async def abort_connection(self, connection_id: str) -> None:
        """Disconnect a local connection."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            connection.abort()

    async def invoke_connection(
        self, connection_id: str, method: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Call ``method`` on one client and return its result."""
        connection = self.connections.get(connection_id)
        if connection is None:
            raise not_found(connection_id)
        return await self.client_results.invoke_local(connection, method, args, timeout)

    async def abort_user(self, user_id: str) -> None:
        """Disconnect every local connection of a user."""
        for connection in list(self.users.get(user_id, {}).values()):
            connection.abort()

    async def close_connections(
        self,
        kind: str,
        name: str,
        reason: str | None = None,
        exclude: Collection[str] | None = None,
    ) -> None:
        """Close the addressed connections with a Close carrying ``reason`` (no reconnect)."""
        close_many(self.registry.audience(kind, name), reason, exclude)

    # -- fan-out ----------------------------------------------------------------------------

    async def deliver(
        self,
        kind: str,
        name: str,
        message: SerializedMessage,
        exclude: Collection[str] | None = None,
    ) -> None:
        """Send a message with its bytes cached per protocol to ``kind``/``name``."""
        targets = self.registry.audience(kind, name)
        if targets:
            write_many(targets, message, exclude if kind in (TO_ALL, TO_GROUP) else None)

    @staticmethod
    def _message(method: str, args: list[Any]) -> SerializedMessage:
        return SerializedMessage(InvocationMessage(method, args))

    async def send_all(
        self, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        """Send to every connection except those in ``exclude``."""
        write_many(self.connections, self._message(method, args), exclude)

    async def send_connection(self, connection_id: str, method: str, args: list[Any]) -> None:
        """Send to one connection."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            connection.write_serialized(self._message(method, args))

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: list[Any]
    ) -> None:
        """Send to each listed connection."""
        message = self._message(method, args)
        for cid in connection_ids:
            connection = self.connections.get(cid)
            if connection is not None:
                connection.write_serialized(message)

    async def send_group(
        self, group: str, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        """Send to the members of ``group`` except those in ``exclude``."""
        members = self.groups.get(group)
        if members:
            write_many(members, self._message(method, args), exclude)

    async def send_groups(self, groups: Collection[str], method: str, args: list[Any]) -> None:
        """Send to the members of each listed group (once per group, as ASP.NET Core does)."""
        message = self._message(method, args)
        for group in groups:
            members = self.groups.get(group)
            if members:
                write_many(members, message, None)

    async def send_user(self, user_id: str, method: str, args: list[Any]) -> None:
        """Send to every connection of a user."""
        conns = self.users.get(user_id)
        if conns:
            write_many(conns, self._message(method, args), None)

    async def send_users(self, user_ids: Collection[str], method: str, args: list[Any]) -> None:
        """Send to every connection of each listed user."""
        message = self._message(method, args)
        for uid in user_ids:
            conns = self.users.get(uid)
            if conns:
                write_many(conns, message, None)
