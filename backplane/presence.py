"""Cluster presence: which connections exist, where, for which user, in which groups.

``self.presence`` inside hubs and ``hub_context.presence`` outside; every call is async and
answers for one hub across the whole cluster (or the one node, with the in-memory manager).
"""

from __future__ import annotations

import bisect
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol


def new_node_id() -> str:
    """A unique node name: the host name and a random suffix (as .NET's server names)."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex}"


class Presence(ABC):
    """Read-only questions about who is connected to one hub."""

    #: The id of the node answering (as ``nodes()`` lists it).
    node_id: str

    @abstractmethod
    async def connections(self) -> list[str]:
        """The ids of every connection of the hub."""

    async def connections_page(self, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to ``limit`` connection ids in id order, those after ``after`` (when given),
        and whether more follow.

        This default sorts every id; a manager with an ordered index may answer cheaper.
        """
        ids = sorted(await self.connections())
        start = 0 if after is None else bisect.bisect_right(ids, after)
        return ids[start : start + limit], start + limit < len(ids)

    @abstractmethod
    async def group_members(self, group: str) -> list[str]:
        """The ids of the connections in ``group``."""

    @abstractmethod
    async def user_connections(self, user: str) -> list[str]:
        """The ids of the connections of ``user``."""

    async def is_user_online(self, user: str) -> bool:
        """True when ``user`` has at least one connection."""
        return bool(await self.user_connections(user))

    @abstractmethod
    async def groups_of(self, connection_id: str) -> list[str]:
        """The groups a connection is in (empty for an unknown connection)."""

    @abstractmethod
    async def count_connections(self) -> int:
        """How many connections the hub has."""

    async def owner_of(self, connection_id: str) -> str | None:
        """The id of the node a connection is on, if presence knows it."""
        return None

    @abstractmethod
    async def nodes(self) -> list[dict[str, Any]]:
        """One dict per live node: ``id``, ``connections``, ``started``, ``last_heartbeat``.

        Times are seconds since the Unix epoch.
        """

    async def has_connection(self, connection_id: str) -> bool:
        """True when the connection exists (on any node)."""
        return connection_id in await self.connections()

    async def has_group_members(self, group: str) -> bool:
        """True when ``group`` has at least one connection."""
        return bool(await self.group_members(group))

    async def users_of(self, connection_ids: Sequence[str]) -> list[str | None]:
        """The user of each connection, in order (None: anonymous, or unknown)."""
        return [None] * len(connection_ids)


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


class _Grouped(Protocol):
    @property
    def groups(self) -> AbstractSet[str]: ...

    @property
    def user(self) -> _Identified | None: ...


class LocalTables(Protocol):
    """The tables ``MemoryPresence`` reads: the node's registry (``lifetime/registry.py``).

    Structural, so this module does not import the lifetime layer that imports it.
    """

    @property
    def connections(self) -> Mapping[str, _Grouped]:
        """Connection id -> connection."""
        ...

    @property
    def groups(self) -> Mapping[str, Collection[str]]:
        """Group -> ids of its local members."""
        ...

    @property
    def users(self) -> Mapping[str, Collection[str]]:
        """User id -> ids of its local connections."""
        ...


class MemoryPresence(Presence):
    """Presence of a single node, answered from the in-memory manager's tables."""

    def __init__(self, manager: LocalTables, node_id: str | None = None) -> None:
        self._manager = manager
        self.node_id = node_id or new_node_id()
        self.started = time.time()

    async def connections(self) -> list[str]:
        """The ids of every connection of the hub."""
        return list(self._manager.connections)

    async def group_members(self, group: str) -> list[str]:
        """The ids of the connections in ``group``."""
        return list(self._manager.groups.get(group, ()))

    async def user_connections(self, user: str) -> list[str]:
        """The ids of the connections of ``user``."""
        return list(self._manager.users.get(user, ()))

    async def groups_of(self, connection_id: str) -> list[str]:
        """The groups a connection is in (empty for an unknown connection)."""
        connection = self._manager.connections.get(connection_id)
        return sorted(connection.groups) if connection is not None else []

    async def count_connections(self) -> int:
        """How many connections the hub has."""
        return len(self._manager.connections)

    async def owner_of(self, connection_id: str) -> str | None:
        """This node, for a connection it has."""
        return self.node_id if connection_id in self._manager.connections else None

    async def has_connection(self, connection_id: str) -> bool:
        """True when the connection is on this node."""
        return connection_id in self._manager.connections

    async def has_group_members(self, group: str) -> bool:
        """True when ``group`` has at least one connection."""
        return bool(self._manager.groups.get(group))

    async def users_of(self, connection_ids: Sequence[str]) -> list[str | None]:
        """The user of each connection, in order (None: anonymous, or unknown)."""
        connections = self._manager.connections
        out: list[str | None] = []
        for cid in connection_ids:
            connection = connections.get(cid)
            user = connection.user if connection is not None else None
            out.append(user.id if user is not None else None)
        return out

    async def nodes(self) -> list[dict[str, Any]]:
        """This node only."""
        return [
            {
                "id": self.node_id,
                "connections": len(self._manager.connections),
                "started": self.started,
                "last_heartbeat": time.time(),
            }
        ]
