"""Stateful connections that move between nodes: a client comes back on any node.

With the Redis backplane, a stateful WebSocket connection has a *resume entry* in Redis
(``keys.resume_key``: by its token's hash, the connection id, hub, user and the node holding
it). When the client's reconnect reaches a node that does not hold the connection, that node
(the *taker*):

1. finds the entry, checks that the request's user is the connection's and that the holder
   is alive, and claims the entry (a compare-and-set: of two nodes reached at once, one wins);
2. subscribes to the connection's channels and holds what arrives for it (``capture.py``);
3. asks the holder, over Redis (``calls.py``), to hand the connection over. The holder takes
   it from its socket if the socket still looks open, quiets it and writes it down
   (``backplane/moving.py``) together with where delivery to it stands on each channel, and
   forgets it in the same loop turn, running no hook;
4. takes the connection up: its groups and presence, its replay, then what it held that the
   holder had not delivered, in order, with the numbering the client expects.

A draining node drops the sockets of its stateful connections without a close frame (it has
stopped listening, so the clients' reconnects reach other nodes) and answers their handover
requests until they have all moved or its deadline passes. A holder that is gone cannot hand
anything over: the resume is refused with 404 and the client starts a new connection, never
a resume that silently misses messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backplane import HubConnection, HubConnectionHandler, User, moving
from backplane.redis.bus import BackplaneUnavailable
from backplane.redis.calls import Answer, NodeCalls
from backplane.redis.capture import read_positions
from backplane.redis.keys import MOVE_RESUME, owner_key, resume_key
from backplane.redis.manager import RedisLifetimeManager

from .transports.websockets import CLOSE_TIMEOUT, TAKEOVER

if TYPE_CHECKING:
    from backplane.redis.node import RedisNode

    from .registry import ConnectionRecord, ConnectionRegistry
    from .tasks import BackgroundTasks

logger = logging.getLogger("hubplane.handover")

HANDOVER = "handover"
#: How long a holder lets a moving connection's invocations run before it refuses the move.
QUIESCE_TIMEOUT = 5.0
#: A resume entry outlives a connection that ended without removing it (a crashed node).
RESUME_TTL = 7 * 24 * 3600


class Handover:
    """This node's side of moving stateful connections: holder and taker."""

    def __init__(
        self,
        registry: ConnectionRegistry,
        node: RedisNode,
        handlers: Mapping[str, HubConnectionHandler],
        tasks: BackgroundTasks,
        owners: bool,
    ) -> None:
        self.registry = registry
        self.node = node
        self.bus = node.bus
        self.handlers = handlers
        self.tasks = tasks
        # No sticky sessions: the connection's owner key follows it.
        self.owners = owners
        self.calls = NodeCalls(node)
        self.calls.serve(HANDOVER, self._serve)
        self._move_sha = node.bus.register_script(MOVE_RESUME)
        self.quiesce_timeout = QUIESCE_TIMEOUT
        registry.removed_hooks.append(self._forget)

    async def start(self) -> None:
        """Answer handover requests from other nodes."""
        await self.calls.start()

    def stop(self) -> None:
        """Stop answering; takers still waiting hear 503."""
        self.calls.stop()

    # -- resume entries ----------------------------------------------------------------------

    def _key(self, token: str) -> bytes:
        return resume_key(self.node.prefix, token)

    def remember(self, record: ConnectionRecord, user: User | None) -> None:
        """Note a stateful connection in Redis, so any node finds it when its client returns."""
        key = self._key(record.token)
        uid = user.id if user is not None else ""
        fields = ["id", record.connection_id, "hub", record.hub_path, "user", uid]
        self.bus.command("HSET", key, *fields, "node", self.node.node_id, keep=True)
        self.bus.command("EXPIRE", key, RESUME_TTL, keep=True)

    def _forget(self, record: ConnectionRecord) -> None:
        if record.stateful and record.connection is not None:
            self.bus.command("DEL", self._key(record.token), keep=True)

    # -- taker -------------------------------------------------------------------------------

    async def take_up(
        self,
        token: str,
        path: str,
        user: User | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> tuple[ConnectionRecord, HubConnection] | int:
        """Take the connection of ``token`` from the node holding it; an HTTP status if not."""
        handler = self.handlers.get(path)
        if handler is None or not isinstance(handler.lifetime, RedisLifetimeManager):
            return 404
        manager = handler.lifetime
        key = self._key(token)
        me = self.node.node_id
        try:
            raw = await self.bus.query("HGETALL", key)
            entry = {k.decode(): v.decode() for k, v in (raw or {}).items()}
            if not entry or entry.get("hub") != path:
                return 404
            cid, holder = entry["id"], entry["node"]
            uid = user.id if user is not None else ""
            if entry.get("user", "") != uid:
                handler.stats.resumes["refused"] += 1
                logger.info("connection %s: a resume by another user refused", cid)
                return 403
            if holder == me or not await self.node.is_live(holder):
                handler.stats.resumes["refused"] += 1
                logger.info(
                    "connection %s: its node %s is gone: the resume is refused", cid, holder
                )
                return 404
            if not await self.bus.query("EVALSHA", self._move_sha, 1, key, holder, me):
                return 409
            groups = [
                g.decode() for g in await self.bus.query("SMEMBERS", manager.keys.groups_of(cid))
            ]
        except BackplaneUnavailable:
            return 503
        await manager.capture(cid, uid or None, groups)
        timeout = self.quiesce_timeout + CLOSE_TIMEOUT + 2.0
        status, state = await self.calls.call(holder, HANDOVER, [token, path], timeout)
        connection: HubConnection | None = None
        if status == 200:
            try:
                connection = moving.restore(handler, state, user=user, headers=headers, query=query)
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("connection %s: cannot take it up: %s", cid, exc)
        if connection is None:
            manager.end_capture(cid)
            self.bus.command("EVALSHA", self._move_sha, 1, key, me, holder, keep=True)
            handler.stats.resumes["refused"] += 1
            logger.info("connection %s: %s did not hand it over (%d)", cid, holder, status)
            return 404 if status != 503 else 503
        await manager.adopt(
            connection, list(state.get("groups") or ()), read_positions(state.get("positions"))
        )
        record = self.registry.moved_in(token, cid, path, user)
        record.connection = connection
        if self.owners:
            self.bus.command("SET", owner_key(self.node.prefix, cid), me, keep=True)
            record.owned = True
        logger.info("%s: taken over from node %s", connection.log_name, holder)
        return record, connection

    # -- holder ------------------------------------------------------------------------------

    async def _serve(self, method: str, args: list[Any]) -> Answer:
        token, path = str(args[0]), str(args[1])
        record = self.registry.get(token)
        if record is None or record.hub_path != path or record.connection is None:
            return 404, None
        connection = record.connection
        if not connection.stateful or connection.closing or record.moving:
            return 409, None
        record.moving = True
        try:
            old = record.run_task
            if old is not None and not old.done():
                # The socket here still looks open; the client has a new one elsewhere.
                old.cancel(TAKEOVER)
                await asyncio.wait({old}, timeout=CLOSE_TIMEOUT)
            if record.run_task is not None or not connection.detached:
                return 409, None
            if not await moving.quiesce(connection, self.quiesce_timeout):
                return 409, None
            if record.run_task is not None or connection.closing:
                return 409, None
            manager = connection.handler.lifetime
            assert isinstance(manager, RedisLifetimeManager)
            state = moving.export(connection)
            state["positions"] = manager.positions(connection)
            # From here to the end of transport_closed nothing awaits: no message can reach
            # the connection here after its positions were taken.
            record.moved = True
            if record.expiry is not None:
                record.expiry.cancel()
                record.expiry = None
            connection.outbound.on_close = None
            self.registry.remove(token)
            await connection.transport_closed(moved=True)
            connection.handler.stats.handovers += 1
            logger.info("%s: handed over to another node", connection.log_name)
            return 200, state
        finally:
            record.moving = False

    # -- draining ----------------------------------------------------------------------------

    def drop_stateful(self) -> list[ConnectionRecord]:
        """Drop the socket of every stateful WebSocket connection, without a close frame, so
        its client resumes on another node; returns their records (detached ones too)."""
        held: list[ConnectionRecord] = []
        for record in list(self.registry.records.values()):
            connection = record.connection
            if connection is None or not connection.stateful or connection.closing:
                continue
            held.append(record)
            if record.drop is not None:
                record.drop()
        return held

    async def wait_moved(self, held: list[ConnectionRecord], timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for ``held`` to move; end those left here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and any(self._still_here(r) for r in held):
            await asyncio.sleep(0.02)
        for record in held:
            if self._still_here(record) and not record.moving:
                connection = record.connection
                assert connection is not None
                logger.info("%s: not resumed elsewhere before the drain ended", connection.log_name)
                self.registry.remove(record.token)
                with contextlib.suppress(Exception):
                    await connection.transport_closed()

    @staticmethod
    def _still_here(record: ConnectionRecord) -> bool:
        connection = record.connection
        return not record.moved and connection is not None and not connection.closed.is_set()
