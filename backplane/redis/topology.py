"""A Redis Cluster's shape as this node knows it: the slot map, and a client per master.

The map comes from ``CLUSTER SLOTS``, asked of the masters known so far and then of the
seeds of the URL, the first that answers wins. It is read again when the writer or a
subscriber finds it stale (a ``MOVED``, a lost connection, a shard that stopped serving a
channel). The clients only open connections (``connect.open_connection``): TLS, AUTH and the
URL's options are the cluster URL's, for every node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from .connect import (
    NETWORK_ERRORS,
    close_connection,
    cluster_node_url,
    cluster_seeds,
    connect_redis,
    open_connection,
    read_reply,
)
from .slots import Address, SlotMap

logger = logging.getLogger("hubplane.redis")


class ClusterUnavailable(ConnectionError):
    """No node of the cluster answered ``CLUSTER SLOTS`` (or none serves every slot)."""


class Topology:
    """The slot map of one Redis Cluster and a redis-py client per node (to open connections)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seeds = cluster_seeds(url)
        self.map = SlotMap([None] * 16384)
        #: Times the map was read (a refresh that changes nothing counts too).
        self.refreshes = 0
        self._clients: dict[Address, aioredis.Redis] = {}
        self._lock = asyncio.Lock()

    def client(self, address: Address) -> aioredis.Redis:
        """The client of the node at ``address`` (made once)."""
        client = self._clients.get(address)
        if client is None:
            node_url = cluster_node_url(self.url, address[0], address[1])
            client = self._clients[address] = connect_redis(node_url)
        return client

    async def refresh(self, timeout: float, first: Address | None = None) -> SlotMap:
        """Read the slot map again (one refresh at a time; a caller arriving during one
        waits for it), asking ``first`` first (a master that has just given a slot away
        knows its new owner before the others hear of it). Raises
        :class:`ClusterUnavailable` when no node answers in time."""
        refreshes = self.refreshes
        async with self._lock:
            if self.refreshes != refreshes:
                return self.map  # somebody refreshed while we waited
            known = [first] if first is not None else []
            candidates = list(dict.fromkeys([*known, *self.map.masters, *self.seeds]))
            errors = []
            for address in candidates:
                try:
                    reply = await self._cluster_slots(address, timeout)
                except (*NETWORK_ERRORS, TimeoutError) as exc:
                    errors.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                if isinstance(reply, Exception):
                    errors.append(f"{address[0]}:{address[1]}: {reply}")
                    continue
                fresh = SlotMap.from_cluster_slots(reply, address[0])
                if not fresh.masters:
                    errors.append(f"{address[0]}:{address[1]}: serves no slot")
                    continue
                self.map = fresh
                self.refreshes += 1
                return fresh
            raise ClusterUnavailable("no Redis Cluster node answered: " + "; ".join(errors))

    async def _cluster_slots(self, address: Address, timeout: float) -> Any:
        connection = None
        try:
            async with asyncio.timeout(timeout):
                connection = await open_connection(self.client(address))
                await connection.send_command("CLUSTER", "SLOTS", check_health=False)
                return await read_reply(connection)
        finally:
            await close_connection(connection)

    async def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            try:
                await client.aclose()
            except Exception:
                logger.debug("closing a Redis client failed", exc_info=True)
        self._clients.clear()
