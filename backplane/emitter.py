"""Publish to a hub's clients from any process that can reach Redis, without running a node.

::

    emitter = Emitter("redis://redis:6379/0", hub="myapp.hubs.ChatHub")
    await emitter.clients.group("room").send("Msg", "hello")
    await emitter.groups.add(connection_id, "room")
    await emitter.abort(connection_id)
    await emitter.aclose()

``SyncEmitter`` offers the same without ``await``, for code that has no event loop. Each send
returns once Redis has taken the PUBLISH and raises ``BackplaneUnavailable`` when Redis cannot
be reached, so a service knows its message went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .clients import ClientProxy, GroupManager, HubClients
from .presence import Presence, new_node_id
from .redis import wire
from .redis.manager import RedisLifetimeManager
from .redis.node import RedisNode

T = TypeVar("T")

#: Seconds the synchronous emitter's loop thread has to start, and to stop on close.
PORTAL_START_TIMEOUT = 5.0


class _EmitterLifetime(RedisLifetimeManager):
    """A lifetime manager with no clients: every call publishes and waits for Redis."""

    serves_clients = False

    def __init__(self, node: RedisNode, hub_name: str, protocols: Sequence[str]) -> None:
        super().__init__(node, hub_name, protocols)
        self._pending: list[asyncio.Future[Any]] = []

    async def ensure_started(self) -> None:
        if not self._started:
            await self.start()

    def _publish(
        self, channel: bytes, message: Any, exclude: Collection[str] | None = None
    ) -> None:
        seq, prev = self.sequence.next(channel, time.monotonic())
        data = wire.write_invocation(
            self._payloads(message), exclude, origin=self.node_id, seq=seq, prev=prev
        )
        kept = self.history.keep(channel) if self._watched else None
        if kept is None:
            # A publish (not a plain query) waits, like the nodes' own, for the hold after a
            # reconnect: the nodes' subscribers come back after their writers, and a message
            # published before they are back would reach nobody.
            reply = self.bus.publish_counted(channel, data)
        else:  # a watched channel: its history keeps the message (see redis/history.py)
            key, keep_ms = kept
            sha = self.bus.history_sha
            reply = self.bus.query("EVALSHA", sha, 1, key, channel, data, keep_ms)
        self._pending.append(asyncio.ensure_future(reply))

    async def _confirmed(self, call: Coroutine[Any, Any, None]) -> None:
        await self.ensure_started()
        # The send methods publish without awaiting in between, so what this call queued
        # is exactly what was added to _pending while it ran.
        self._pending = []
        await call
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def send_all(
        self, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        await self._confirmed(super().send_all(method, args, exclude))

    async def send_connection(self, connection_id: str, method: str, args: list[Any]) -> None:
        await self._confirmed(super().send_connection(connection_id, method, args))

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: list[Any]
    ) -> None:
        await self._confirmed(super().send_connections(connection_ids, method, args))

    async def send_group(
        self, group: str, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        await self._confirmed(super().send_group(group, method, args, exclude))

    async def send_groups(self, groups: Collection[str], method: str, args: list[Any]) -> None:
        await self._confirmed(super().send_groups(groups, method, args))

    async def send_user(self, user_id: str, method: str, args: list[Any]) -> None:
        await self._confirmed(super().send_user(user_id, method, args))

    async def send_users(self, user_ids: Collection[str], method: str, args: list[Any]) -> None:
        await self._confirmed(super().send_users(user_ids, method, args))

    async def add_to_group(self, connection_id: str, group: str) -> None:
        await self.ensure_started()
        await super().add_to_group(connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        await self.ensure_started()
        await super().remove_from_group(connection_id, group)

    async def abort_connection(self, connection_id: str) -> None:
        await self.ensure_started()
        await self.bus.publish_counted(
            self.channels.control,
            wire.write_control(wire.CONTROL_ABORT_CONNECTION, connection_id),
        )

    async def abort_user(self, user_id: str) -> None:
        await self.ensure_started()
        await self.bus.publish_counted(
            self.channels.control, wire.write_control(wire.CONTROL_ABORT_USER, user_id)
        )


class Emitter:
    """Reach the clients of one hub through Redis: ``clients``, ``groups``, ``abort``."""

    def __init__(
        self,
        redis_url: str,
        hub: str,
        channel_prefix: str | bytes = "",
        protocols: Sequence[str] = ("json", "messagepack"),
        pubsub: str | None = None,
    ) -> None:
        self.hub = hub
        # ``pubsub``: as the nodes' --redis-pubsub (a redis+cluster:// URL: sharded unless
        # "classic").
        self._node = RedisNode(
            redis_url,
            channel_prefix=channel_prefix,
            pubsub=pubsub,
            node_id=f"emitter_{new_node_id().partition('_')[0]}_{uuid.uuid4().hex}",
            presence=False,
        )
        # A service wants to hear quickly that Redis is not there.
        self._node.bus.connect_wait = 2.0
        self._lifetime = _EmitterLifetime(self._node, hub, tuple(protocols))
        self.clients = HubClients(self._lifetime)
        self.groups = GroupManager(self._lifetime)

    @property
    def presence(self) -> Presence:
        """Read the cluster's presence for this hub (as ``hub_context.presence``)."""
        return self._lifetime.presence

    async def abort(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""
        await self._lifetime.abort_connection(connection_id)

    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user wherever it is connected."""
        await self._lifetime.abort_user(user_id)

    async def aclose(self) -> None:
        """Flush and close the Redis connections."""
        await self._lifetime.stop()

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --------------------------------------------------------------------------- synchronous


class _Portal:
    """An event loop in a daemon thread, serving an anyio blocking portal, that runs the
    emitter's coroutines for synchronous callers, each within ``timeout`` seconds.

    The thread is a daemon (as anyio's own ``start_blocking_portal`` thread is not): a
    process that never closes its ``SyncEmitter`` still exits.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        started: queue.SimpleQueue[BlockingPortal] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=anyio.run, args=(_serve, started), name="hubplane-emitter", daemon=True
        )
        self._thread.start()
        self._portal = started.get(timeout=PORTAL_START_TIMEOUT)

    def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await func(*args)`` in the portal's loop; a call that times out is cancelled
        there (raising ``TimeoutError`` here) instead of going on unseen."""
        future = self._portal.start_task_soon(func, *args)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._portal.call(self._portal.stop, True)
        self._thread.join(PORTAL_START_TIMEOUT)


async def _serve(started: queue.SimpleQueue[BlockingPortal]) -> None:
    async with BlockingPortal() as portal:
        started.put(portal)
        await portal.sleep_until_stopped()


class SyncClientProxy:
    """A set of clients to send to, synchronously: ``proxy.send("Method", *args)``."""

    __slots__ = ("_runner", "_proxy")

    def __init__(self, runner: _Portal, proxy: ClientProxy) -> None:
        self._runner = runner
        self._proxy = proxy

    def send(self, method: str, *args: Any) -> None:
        """Send ``method(*args)``; returns once Redis has taken it."""
        self._runner.run(self._proxy.send, method, *args)


class SyncHubClients:
    """The client proxies of :class:`HubClients`, synchronous."""

    def __init__(self, runner: _Portal, clients: HubClients) -> None:
        self._runner = runner
        self._clients = clients
        self.all = SyncClientProxy(runner, clients.all)

    def _wrap(self, proxy: ClientProxy) -> SyncClientProxy:
        return SyncClientProxy(self._runner, proxy)

    def all_except(self, connection_ids: Iterable[str]) -> SyncClientProxy:
        """Every connection except the listed ones."""
        return self._wrap(self._clients.all_except(connection_ids))

    def client(self, connection_id: str) -> SyncClientProxy:
        """One connection."""
        return self._wrap(self._clients.client(connection_id))

    def clients(self, connection_ids: Iterable[str]) -> SyncClientProxy:
        """Each of the listed connections."""
        return self._wrap(self._clients.clients(connection_ids))

    def group(self, name: str) -> SyncClientProxy:
        """The members of a group."""
        return self._wrap(self._clients.group(name))

    def groups(self, names: Iterable[str]) -> SyncClientProxy:
        """The members of each listed group."""
        return self._wrap(self._clients.groups(names))

    def group_except(self, name: str, connection_ids: Iterable[str]) -> SyncClientProxy:
        """The members of a group except the listed connections."""
        return self._wrap(self._clients.group_except(name, connection_ids))

    def user(self, user_id: str) -> SyncClientProxy:
        """Every connection of a user."""
        return self._wrap(self._clients.user(user_id))

    def users(self, user_ids: Iterable[str]) -> SyncClientProxy:
        """Every connection of each listed user."""
        return self._wrap(self._clients.users(user_ids))


class SyncGroupManager:
    """Adds connections to groups and removes them, synchronously."""

    def __init__(self, runner: _Portal, groups: GroupManager) -> None:
        self._runner = runner
        self._groups = groups

    def add(self, connection_id: str, group: str) -> None:
        """Add a connection (on any node) to a group."""
        self._runner.run(self._groups.add, connection_id, group)

    def remove(self, connection_id: str, group: str) -> None:
        """Remove a connection (on any node) from a group."""
        self._runner.run(self._groups.remove, connection_id, group)


class SyncEmitter:
    """:class:`Emitter` for synchronous code: the same calls without ``await``."""

    def __init__(
        self,
        redis_url: str,
        hub: str,
        channel_prefix: str | bytes = "",
        protocols: Sequence[str] = ("json", "messagepack"),
        timeout: float = 35.0,
        pubsub: str | None = None,
    ) -> None:
        self._runner = _Portal(timeout)
        self._emitter: Emitter = self._runner.run(
            _make_emitter, redis_url, hub, channel_prefix, protocols, pubsub
        )
        self.hub = hub
        self.clients = SyncHubClients(self._runner, self._emitter.clients)
        self.groups = SyncGroupManager(self._runner, self._emitter.groups)

    def abort(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""
        self._runner.run(self._emitter.abort, connection_id)

    def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user wherever it is connected."""
        self._runner.run(self._emitter.abort_user, user_id)

    def close(self) -> None:
        """Flush, close the Redis connections and stop the background loop."""
        try:
            self._runner.run(self._emitter.aclose)
        finally:
            self._runner.close()

    def aclose(self) -> None:
        """The same as :meth:`close` (the name the asynchronous emitter uses)."""
        self.close()

    def __enter__(self) -> SyncEmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make_emitter(
    redis_url: str,
    hub: str,
    channel_prefix: str | bytes,
    protocols: Sequence[str],
    pubsub: str | None,
) -> Emitter:
    # Built inside the loop thread: its asyncio objects belong to that loop.
    return Emitter(redis_url, hub, channel_prefix, protocols, pubsub)
