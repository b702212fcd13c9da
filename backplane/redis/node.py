"""A node on the Redis backplane: its bus, its heartbeat, and its presence entries.

Presence keys and the scripts over them live in ``keys.py`` (``docs/redis-protocol.md``).

Survivors purge a node whose heartbeat is older than the timeout, in one Lua script; a node
whose heartbeat finds itself missing (Redis lost its data, or it was purged while stalled)
writes all its entries again, as it does after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from ..lifetime.base import ClientConnection
from ..presence import new_node_id
from . import keys
from .bus import BackplaneUnavailable, RedisBus
from .sequence import PublishSequence, ReceiveSequence

if TYPE_CHECKING:
    from .base import NodeHub
    from .manager import RedisLifetimeManager

logger = logging.getLogger("hubplane.redis")


class RedisNode:
    """This process's membership of the cluster: bus, heartbeat, presence writes."""

    def __init__(
        self,
        redis_url: str,
        *,
        channel_prefix: str | bytes = b"",
        node_id: str | None = None,
        heartbeat: float = 1.0,
        timeout: float = 5.0,
        buffer_limit: int = 10000,
        presence: bool = True,
        payload_protocols: Sequence[str] = (),
    ) -> None:
        self.prefix = (
            channel_prefix.encode() if isinstance(channel_prefix, str) else bytes(channel_prefix)
        )
        self.node_id = node_id or new_node_id()
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.presence_enabled = presence
        # The protocols serialized into each published message; empty: every protocol the
        # hub offers (the .NET layout). Fewer makes publishing cheaper; receiving nodes
        # encode the others once per message for their clients.
        self.payload_protocols = tuple(payload_protocols)
        self.bus = RedisBus(redis_url, buffer_limit=buffer_limit)
        self.started = time.time()
        self.managers: list[RedisLifetimeManager] = []
        self.nodes_key = keys.nodes_key(self.prefix)
        self.node_key = self.node_key_of(self.node_id)
        self._remove_sha = self.bus.register_script(keys.REMOVE_CONNECTION)
        self._purge_sha = self.bus.register_script(keys.PURGE_NODE)
        self._touch_sha = self.bus.register_script(keys.TOUCH)
        self._heartbeat_sha = self.bus.register_script(keys.HEARTBEAT)
        self._live_sha = self.bus.register_script(keys.LIVE)
        self._start_lock = asyncio.Lock()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started = False
        self.purged_nodes = 0
        self.reregistrations = 0
        #: The numbers on what this node publishes, and duplicate/gap checks on what it hears.
        self.published = PublishSequence()
        self.received = ReceiveSequence()
        if presence:
            self.bus.on_reconnect(self._register_all)

    def node_key_of(self, node_id: str) -> bytes:
        """The HASH describing a node."""
        return keys.node_key(self.prefix, node_id)

    def manager(self, hub_name: str, protocols: Sequence[str]) -> RedisLifetimeManager:
        """A lifetime manager for one hub on this node."""
        from .manager import RedisLifetimeManager

        manager = RedisLifetimeManager(self, hub_name, protocols)
        self.managers.append(manager)
        return manager

    async def start(self) -> None:
        """Connect (waiting a little for Redis) and start heartbeating. Idempotent."""
        async with self._start_lock:
            if self._started:
                return
            await self.bus.start()
            if self.presence_enabled:
                self._heartbeat_task = asyncio.get_running_loop().create_task(
                    self._heartbeat_forever(), name="hubplane-heartbeat"
                )
            self._started = True

    async def stop(self) -> None:
        """Remove this node's presence entries (a clean leave) and close the bus."""
        if not self._started:
            return
        self._started = False
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._heartbeat_task
        if self.presence_enabled and self.bus.writer_up:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.query(*self._purge_self()), 2.0)
        await self.bus.stop()

    # -- presence writes (fire and forget, in order on the writer) --------------------------

    def _info(self) -> list[Any]:
        hubs = msgpack.packb([m.channels.base for m in self.managers], use_bin_type=False)
        return [
            b"id",
            self.node_id,
            b"host",
            socket.gethostname(),
            b"pid",
            os.getpid(),
            b"started",
            int(self.started * 1000),
            b"hubs",
            hubs,
        ]

    def _purge_self(self) -> tuple[Any, ...]:
        """The command removing all of this node's presence entries, whatever its heartbeat."""
        return ("EVALSHA", self._purge_sha, 2, self.nodes_key, self.node_key, self.node_id, 2**62)

    async def _register_all(self) -> None:
        """Write this node and every local entry (after a reconnect or a data loss).

        Our old entries go first: removals dropped during an outage must not leave ghosts.
        The writer runs these in order, so nobody sees the node half written for long.
        """
        bus = self.bus
        bus.command(*self._purge_self())
        bus.command("EVALSHA", self._touch_sha, 1, self.nodes_key, self.node_id)
        bus.command("HSET", self.node_key, *self._info())
        for manager in self.managers:
            for connection in list(manager.connections.values()):
                self.connection_added(manager, connection)
                for group in connection.groups:
                    self.group_added(manager, connection.connection_id, group)

    def connection_added(self, manager: NodeHub, connection: ClientConnection) -> None:
        """Record a new local connection."""
        if not self.presence_enabled:
            return
        keys = manager.keys
        cid = connection.connection_id
        user = connection.user.id if connection.user is not None else None
        bus = self.bus
        bus.command("HSET", keys.conns, cid, msgpack.packb([self.node_id, user]))
        bus.command("SADD", keys.node(self.node_id), cid)
        if user is not None:
            bus.command("SADD", keys.user(user), cid)

    def connection_removed(self, manager: NodeHub, connection_id: str) -> None:
        """Forget a local connection (and its groups)."""
        if not self.presence_enabled:
            return
        self.bus.command(
            "EVALSHA", self._remove_sha, 0, manager.keys.base, connection_id, self.node_id
        )

    def group_added(self, manager: NodeHub, connection_id: str, group: str) -> None:
        """Record a local connection joining a group."""
        if not self.presence_enabled:
            return
        keys = manager.keys
        self.bus.command("SADD", keys.group(group), connection_id)
        self.bus.command("SADD", keys.groups_of(connection_id), group)

    def group_removed(self, manager: NodeHub, connection_id: str, group: str) -> None:
        """Record a local connection leaving a group."""
        if not self.presence_enabled:
            return
        keys = manager.keys
        self.bus.command("SREM", keys.group(group), connection_id)
        self.bus.command("SREM", keys.groups_of(connection_id), group)

    # -- liveness ----------------------------------------------------------------------------

    async def live_nodes(self) -> dict[str, float]:
        """Node id -> last heartbeat (seconds since epoch) of every live node."""
        raw = await self.bus.query(
            "EVALSHA", self._live_sha, 1, self.nodes_key, int(self.timeout * 1000)
        )
        result: dict[str, float] = {}
        # redis-py may hand back a flat list or (member, score) pairs, depending on version.
        pairs = (
            raw
            if raw and isinstance(raw[0], list | tuple)
            else zip(raw[::2], raw[1::2], strict=True)
        )
        for member, score in pairs:
            result[member.decode()] = float(score) / 1000.0
        return result

    async def is_live(self, node_id: str) -> bool:
        """True when ``node_id`` heartbeated within the timeout."""
        if node_id == self.node_id:
            return True
        return node_id in await self.live_nodes()

    async def beat(self) -> None:
        """One heartbeat: refresh our score (re-registering when missing), purge the dead."""
        bus = self.bus
        present, now, dead = await bus.query(
            "EVALSHA",
            self._heartbeat_sha,
            1,
            self.nodes_key,
            self.node_id,
            int(self.timeout * 1000),
        )
        if not present:
            self.reregistrations += 1
            logger.warning(
                "node %s missing from Redis presence (data lost or purged): registering again",
                self.node_id,
            )
            await self._register_all()
        cutoff = int(now) - int(self.timeout * 1000)
        for raw in dead:
            node = raw.decode()
            if node == self.node_id:
                continue
            removed = await bus.query(
                "EVALSHA", self._purge_sha, 2, self.nodes_key, self.node_key_of(node), node, cutoff
            )
            if removed:
                self.purged_nodes += 1
                logger.warning(
                    "node %s stopped heartbeating: purged it and %d connections",
                    node,
                    int(removed) - 1,
                )

    async def _heartbeat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except BackplaneUnavailable:
                pass
            except Exception:
                logger.exception("presence heartbeat failed")
            await asyncio.sleep(self.heartbeat)
