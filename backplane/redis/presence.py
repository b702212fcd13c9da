"""Presence of one hub across the cluster, read from the entries the nodes keep in Redis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from ..presence import Presence

if TYPE_CHECKING:
    from .base import ClusterNode
    from .keys import PresenceKeys


def _decode_list(raw: Any) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]


class RedisPresence(Presence):
    """Presence of one hub across the cluster, read from Redis."""

    def __init__(self, node: ClusterNode, keys: PresenceKeys) -> None:
        self._node = node
        self._keys = keys
        self.node_id = node.node_id

    async def _query(self, *args: Any) -> Any:
        return await self._node.bus.query(*args)

    async def connections(self) -> list[str]:
        """The ids of every connection of the hub."""
        return _decode_list(await self._query("HKEYS", self._keys.conns))

    async def group_members(self, group: str) -> list[str]:
        """The ids of the connections in ``group``."""
        return _decode_list(await self._query("SMEMBERS", self._keys.group(group)))

    async def user_connections(self, user: str) -> list[str]:
        """The ids of the connections of ``user``."""
        return _decode_list(await self._query("SMEMBERS", self._keys.user(user)))

    async def is_user_online(self, user: str) -> bool:
        """True when ``user`` has at least one connection."""
        return int(await self._query("SCARD", self._keys.user(user))) > 0

    async def groups_of(self, connection_id: str) -> list[str]:
        """The groups a connection is in (empty for an unknown connection)."""
        keys = self._keys
        return sorted(_decode_list(await self._query("SMEMBERS", keys.groups_of(connection_id))))

    async def count_connections(self) -> int:
        """How many connections the hub has."""
        return int(await self._query("HLEN", self._keys.conns))

    async def has_connection(self, connection_id: str) -> bool:
        """True when presence lists the connection (on any node)."""
        return bool(await self._query("HEXISTS", self._keys.conns, connection_id))

    async def has_group_members(self, group: str) -> bool:
        """True when ``group`` has at least one connection."""
        return int(await self._query("SCARD", self._keys.group(group))) > 0

    async def users_of(self, connection_ids: Sequence[str]) -> list[str | None]:
        """The user of each connection, in order (None: anonymous, or unknown)."""
        if not connection_ids:
            return []
        out: list[str | None] = []
        for raw in await self._query("HMGET", self._keys.conns, *connection_ids):
            user = None
            if raw is not None:
                try:
                    record = msgpack.unpackb(raw, raw=False)
                    user = record[1] if isinstance(record[1], str) else None
                except Exception:
                    user = None
            out.append(user)
        return out

    async def owner_of(self, connection_id: str) -> str | None:
        """The node that owns a connection, if presence knows it."""
        raw = await self._query("HGET", self._keys.conns, connection_id)
        if raw is None:
            return None
        try:
            node, _user = msgpack.unpackb(raw, raw=False)[:2]
        except Exception:
            return None
        return node if isinstance(node, str) else None

    async def nodes(self) -> list[dict[str, Any]]:
        """One dict per live node serving this hub."""
        node = self._node
        live = await node.live_nodes()
        result: list[dict[str, Any]] = []
        base = self._keys.base
        for node_id, last in sorted(live.items()):
            info = await self._query("HGETALL", node.node_key_of(node_id))
            hubs_raw = info.get(b"hubs")
            try:
                hubs = msgpack.unpackb(hubs_raw, raw=True) if hubs_raw else []
            except Exception:
                hubs = []
            if base not in hubs:
                continue
            count = int(await self._query("SCARD", self._keys.node(node_id)))
            started = info.get(b"started")
            result.append(
                {
                    "id": node_id,
                    "connections": count,
                    "started": int(started) / 1000.0 if started else None,
                    "last_heartbeat": last,
                }
            )
        return result
