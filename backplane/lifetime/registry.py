"""This node's connections of one hub, their groups and users: one copy for every manager.

Like ASP.NET Core's ``HubConnectionStore``. The tables are plain dicts that fan-out reads
directly (managers alias them), so a send costs no call into this class; only membership
changes go through its methods, which say what changed so the Redis manager can follow
with its subscriptions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple

from ..errors import LimitExceededError
from .base import TO_ALL, TO_CONNECTION, TO_GROUP, TO_USER, ClientConnection


class Change(enum.IntEnum):
    """What ``join`` or ``leave`` changed (falsy when nothing)."""

    NONE = 0  # already a member (join) or not one (leave)
    MEMBER = 1  # the connection's membership changed
    GROUP = 2  # ... and the group gained its first or lost its last local member


class Removal(NamedTuple):
    """What a connection's departure left empty on this node."""

    #: Groups that no longer have a local member.
    groups: list[str]
    #: The connection's user when it had no other local connection, else None.
    user: str | None


class ConnectionRegistry:
    """Local connections by id, group members by group, user connections by user id."""

    __slots__ = ("connections", "groups", "users", "refused")

    def __init__(self) -> None:
        # Never rebound: managers keep references to these dicts for the fan-out path.
        self.connections: dict[str, ClientConnection] = {}
        self.groups: dict[str, dict[str, ClientConnection]] = {}
        self.users: dict[str, dict[str, ClientConnection]] = {}
        #: Joins refused by a connection's group limit.
        self.refused = 0

    def add(self, connection: ClientConnection) -> bool:
        """Register a connection; True when it is its user's first one on this node."""
        cid = connection.connection_id
        self.connections[cid] = connection
        user = connection.user
        if user is None:
            return False
        conns = self.users.get(user.id)
        if conns is None:
            self.users[user.id] = {cid: connection}
            return True
        conns[cid] = connection
        return False

    def remove(self, connection: ClientConnection) -> Removal | None:
        """Forget a connection, its groups and its user; None when it was not registered."""
        cid = connection.connection_id
        if self.connections.pop(cid, None) is None:
            return None
        emptied = [group for group in connection.groups if self._drop_member(group, cid)]
        connection.clear_groups()
        gone_user = None
        user = connection.user
        if user is not None:
            conns = self.users.get(user.id)
            if conns is not None:
                conns.pop(cid, None)
                if not conns:
                    del self.users[user.id]
                    gone_user = user.id
        return Removal(emptied, gone_user)

    def join(self, connection: ClientConnection, group: str, limit: int | None = None) -> Change:
        """Add a registered connection to ``group``; past ``limit`` groups, refuse it with
        :class:`LimitExceededError` (its text names ``--max-groups-per-connection``)."""
        if group in connection.groups:
            return Change.NONE
        if limit is not None and len(connection.groups) >= limit:
            self.refused += 1
            raise LimitExceededError(
                f"Connection '{connection.connection_id}' is in {len(connection.groups)} groups, "
                f"the most --max-groups-per-connection ({limit}) allows: it cannot join "
                f"'{group}'."
            )
        connection.add_group(group)
        cid = connection.connection_id
        members = self.groups.get(group)
        if members is None:
            self.groups[group] = {cid: connection}
            return Change.GROUP
        members[cid] = connection
        return Change.MEMBER

    def leave(self, connection: ClientConnection, group: str) -> Change:
        """Remove a registered connection from ``group``."""
        connection.discard_group(group)
        members = self.groups.get(group)
        if members is None or members.pop(connection.connection_id, None) is None:
            return Change.NONE
        if members:
            return Change.MEMBER
        del self.groups[group]
        return Change.GROUP

    def audience(self, kind: str, name: str) -> Mapping[str, ClientConnection] | None:
        """The local connections ``kind``/``name`` addresses (``TO_ALL``, ``TO_GROUP``...)."""
        if kind == TO_ALL:
            return self.connections
        if kind == TO_GROUP:
            return self.groups.get(name)
        if kind == TO_USER:
            return self.users.get(name)
        if kind == TO_CONNECTION:
            connection = self.connections.get(name)
            return {name: connection} if connection is not None else None
        raise ValueError(f"unknown audience {kind!r}")

    def _drop_member(self, group: str, cid: str) -> bool:
        """Take ``cid`` out of ``group``'s members; True when that emptied the group."""
        members = self.groups.get(group)
        if members is None or members.pop(cid, None) is None:
            return False
        if members:
            return False
        del self.groups[group]
        return True
