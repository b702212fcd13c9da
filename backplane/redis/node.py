"""A node on the Redis backplane: its bus, its heartbeat, and its presence entries.

Presence keys and the scripts over them live in ``keys.py`` (``docs/redis-protocol.md``).

Survivors purge a node whose heartbeat is older than the timeout, in bounded steps with
declared keys (``purge.py``), off the heartbeat's path; a node whose heartbeat finds itself
missing (Redis lost its data, or it was purged while stalled) writes all its entries again,
as it does after every reconnect, and then sweeps its own entries for stale ones (removals
lost while Redis was away). A node killed outright is
found faster, by its closed Redis connection (``watch.py``, rules in ``liveness.py``). Either
way the purging node announces the verdict on ``<prefix>hubplane:purged``, and every node
fails what waits on the dead one (``on_node_dead``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from ..lifetime.base import ClientConnection
from ..presence import new_node_id
from . import keys
from .bus import BackplaneUnavailable, RedisBus
from .history import WatchedChannels
from .liveness import DeadNodes, PurgeGuard, recent_ms
from .purge import PresencePurge
from .sequence import PublishSequence, ReceiveSequence
from .watch import NodeWatcher

if TYPE_CHECKING:
    from .base import NodeHub
    from .durable import DurableRecorder
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
        pubsub: str | None = None,
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
        # ``pubsub``: "sharded" or "classic" (see bus.PUBSUB_MODES); None: the URL's default.
        self.bus = RedisBus(redis_url, buffer_limit=buffer_limit, pubsub=pubsub)
        self.started = time.time()
        self.managers: list[RedisLifetimeManager] = []
        #: On a Redis Cluster: keys in the cluster layout (hash tags, ``keys.py``).
        self.cluster = self.bus.cluster
        self.nodes_key = keys.nodes_key(self.prefix, self.cluster)
        self.node_key = self.node_key_of(self.node_id)
        self.purger = PresencePurge(self.bus, self.prefix, self.node_id)
        self._touch_sha = self.bus.register_script(keys.TOUCH)
        self._heartbeat_sha = self.bus.register_script(keys.HEARTBEAT)
        self._live_sha = self.bus.register_script(keys.LIVE)
        self._start_lock = asyncio.Lock()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # Purges of dead nodes (off the heartbeat's path) and the sweep of our own entries.
        self._purges: dict[str, asyncio.Task[bool]] = {}
        self._resync_task: asyncio.Task[None] | None = None
        self._started = False
        self._connected_once = False
        self.purged_nodes = 0
        #: Nodes this node found dead and purged, by the signal that showed it.
        self.dead_nodes: dict[str, int] = {"connection": 0, "heartbeat": 0}
        self.reregistrations = 0
        #: The numbers on what this node publishes, and duplicate/gap checks on what it hears.
        self.published = PublishSequence()
        self.received = ReceiveSequence()
        #: Watched channels: publishing there keeps history (``history.py``).
        self.history = WatchedChannels(self.bus, self.prefix)
        #: With ``--durable-resume``: records of this node's stateful connections (set by the
        #: server).
        self.durable: DurableRecorder | None = None
        self.deaths = DeadNodes()
        self.guard = PurgeGuard(recent_ms(heartbeat, timeout), int(timeout * 1000))
        self.watcher = NodeWatcher(
            self.bus,
            self.node_id,
            self.nodes_key,
            keys.node_channel(self.prefix, ""),
            heartbeat,
            timeout,
            self.guard,
            self.deaths,
            self._purge_fast,
        )
        self._register_task: asyncio.Task[None] | None = None
        if presence:
            self.bus.on_reconnect(self._register_all)
            self.bus.on_reconnect(self._writer_connected)
            if self.cluster:
                # A failed master may have taken writes its replica never got (replication
                # is asynchronous): after a failover (channels moved, or the masters
                # changed) every node writes its entries again, whether or not its own
                # writer used the failed master.
                self.bus.on_resubscribed(self._register_soon)

    def node_key_of(self, node_id: str) -> bytes:
        """The HASH describing a node."""
        return keys.node_key(self.prefix, node_id, self.cluster)

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
            bus = self.bus
            await bus.start()
            await bus.subscribe(keys.purged_channel(self.prefix), self._on_purged)
            await self.history.start()
            if self.presence_enabled:
                # Nothing is published there: Redis counting this subscription is the point.
                await bus.subscribe(keys.node_channel(self.prefix, self.node_id), _ignore)
                loop = asyncio.get_running_loop()
                self._heartbeat_task = loop.create_task(
                    self._heartbeat_forever(), name="hubplane-heartbeat"
                )
                self._watch_task = loop.create_task(self.watcher.run(), name="hubplane-watch")
            self._started = True

    async def stop(self) -> None:
        """Remove this node's presence entries (a clean leave) and close the bus."""
        if not self._started:
            return
        self._started = False
        self.history.stop()
        tasks = [
            self._heartbeat_task,
            self._watch_task,
            self._resync_task,
            self._register_task,
            *self._purges.values(),
        ]
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.presence_enabled and self.bus.writer_up:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.purger.purge(self.node_id, 2**62), 2.0)
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

    async def _register_all(self) -> None:
        """Write this node and every local entry (after a reconnect or a data loss).

        The writer runs these in order, so nobody sees the node half written for long. Then
        our entries are swept for stale ones (removals dropped during an outage must not
        leave ghosts): in steps, once the writer drains again (this may run before it does).
        """
        bus = self.bus
        bus.command("EVALSHA", self._touch_sha, 1, self.nodes_key, self.node_id)
        bus.command("HSET", self.node_key, *self._info())
        for manager in self.managers:
            for connection in list(manager.connections.values()):
                self.connection_added(manager, connection)
                for group in connection.groups:
                    self.group_added(manager, connection.connection_id, group)
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._resync_task = asyncio.get_running_loop().create_task(
            self._resync(), name="hubplane-presence-sweep"
        )

    def _register_soon(self) -> None:
        """:meth:`_register_all` in a task (from a synchronous hook), while connected."""
        if not self._started or not self.bus.writer_up:
            return  # the writer's reconnect writes everything anyway
        self._register_task = asyncio.get_running_loop().create_task(
            self._register_all(), name="hubplane-presence-rewrite"
        )

    async def _resync(self) -> None:
        """Remove our entries that no local connection (or group) stands for any more."""
        for manager in list(self.managers):

            def local(cid: str, hub: NodeHub = manager) -> Collection[str] | None:
                connection = hub.connections.get(cid)
                return None if connection is None else connection.groups

            try:
                await self.purger.sweep(manager.keys, self.node_id, local)
            except BackplaneUnavailable:
                return  # Redis went away again: the next reconnect sweeps
            except Exception:
                logger.exception("sweeping this node's presence entries failed")
                return

    async def _writer_connected(self) -> None:
        """After a reconnect, distrust heartbeats and counts for a while (see PurgeGuard)."""
        self.watcher.reconnected()
        if self._connected_once:
            self.guard.reconnected()
        self._connected_once = True

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

    def connection_removed(
        self,
        manager: NodeHub,
        connection_id: str,
        user: str | None = None,
        groups: Collection[str] = (),
    ) -> None:
        """Forget a local connection of ``user`` (and its ``groups``)."""
        if not self.presence_enabled:
            return
        self.bus.command(
            *self.purger.remove_command(manager.keys, connection_id, self.node_id, user, groups)
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

    def on_node_dead(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(node_id)`` whenever this node learns that a node died."""
        self.deaths.listen(listener)

    def is_dead(self, node_id: str) -> bool:
        """True when ``node_id`` was found dead lately (and not seen alive since)."""
        return node_id in self.deaths

    def _on_purged(self, _channel: bytes, data: bytes) -> None:
        node = data.decode(errors="replace")
        if node != self.node_id:
            self.deaths.declare(node)

    async def _purge(self, node: str, cutoff: int, signal: str) -> bool:
        """Purge ``node`` unless it beat after ``cutoff`` (ms); announce it. True if purged."""
        task = self._start_purge(node, cutoff, signal)
        return False if task is None else await asyncio.shield(task)

    def _start_purge(self, node: str, cutoff: int, signal: str) -> asyncio.Task[bool] | None:
        """Purge ``node`` in a task of its own (None: this node is purging it already)."""
        running = self._purges.get(node)
        if running is not None and not running.done():
            return None
        task = asyncio.get_running_loop().create_task(
            self._purge_now(node, cutoff, signal), name="hubplane-purge"
        )
        self._purges[node] = task
        task.add_done_callback(self._purge_done)
        return task

    def _purge_done(self, task: asyncio.Task[bool]) -> None:
        for node, running in list(self._purges.items()):
            if running is task:
                del self._purges[node]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, BackplaneUnavailable):
            logger.error("purging a dead node failed", exc_info=exc)

    async def _purge_now(self, node: str, cutoff: int, signal: str) -> bool:
        removed = await self.purger.purge(node, cutoff)
        if removed is None:
            return False
        self.purged_nodes += 1
        self.dead_nodes[signal] += 1
        why = "its Redis connection closed" if signal == "connection" else "stopped heartbeating"
        logger.warning("node %s is dead (%s): purged it and %d connections", node, why, removed)
        self.bus.publish(keys.purged_channel(self.prefix), node.encode())
        self.deaths.declare(node)
        return True

    async def _purge_fast(self, node: str, cutoff: int) -> bool:
        return await self._purge(node, cutoff, "connection")

    async def beat(self) -> None:
        """One heartbeat: refresh our score (re-registering when missing), purge the dead."""
        bus = self.bus
        present, now, dead, previous = await bus.query(
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
        now = int(now)
        # Our own previous beat must be recent, or the others' look old only because Redis
        # (or this process) stalled: they are queued behind us (see PurgeGuard).
        if not self.guard.allows(now, int(previous) if int(previous) >= 0 else None):
            return
        cutoff = now - int(self.timeout * 1000)
        for raw in dead:
            node = raw.decode()
            if node != self.node_id:
                # Not awaited: our next beat must not wait for a large node's purge.
                self._start_purge(node, cutoff, "heartbeat")

    async def _heartbeat_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.beat()
            except BackplaneUnavailable:
                pass
            except Exception:
                logger.exception("presence heartbeat failed")
            # On a fixed beat, so that a live node's score is never much older than one
            # interval (the watcher's rule counts on it).
            next_at = max(next_at + self.heartbeat, loop.time())
            await asyncio.sleep(next_at - loop.time())


def _ignore(_channel: bytes, _data: bytes) -> None:
    """The handler of a node's own channel: nothing is published there."""
