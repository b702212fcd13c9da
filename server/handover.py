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
requests until they have all moved or its deadline passes.

A holder that is gone cannot hand anything over. With ``--durable-resume`` it recorded the
connection before sending anything (``backplane/redis/durable.py``): the taker takes the
connection up from that record and the history of its channels
(``backplane/redis/revive.py``), in the same steps (claim, capture, then read). Without a
record, or when the record or the history may miss something, the resume is refused with
404 and the client starts a new connection, never a resume that silently misses messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from backplane import HubConnection, HubConnectionHandler, User, moving
from backplane.lifetime.base import ClientConnection, SerializedMessage
from backplane.redis import revive
from backplane.redis.bus import BackplaneUnavailable
from backplane.redis.calls import Answer, NodeCalls
from backplane.redis.capture import Positions, read_positions
from backplane.redis.durable import DurableRecorder
from backplane.redis.keys import (
    FORGET_RESUME,
    MOVE_RESUME,
    owner_key,
    resume_key,
    resume_log_key,
    resume_pos_key,
)
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
        *,
        durable: bool = False,
        disconnect_timeout: float = 15.0,
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
        self._forget_sha = node.bus.register_script(FORGET_RESUME)
        self.quiesce_timeout = QUIESCE_TIMEOUT
        registry.removed_hooks.append(self._forget)
        # Recorded connections whose entry another node claimed: since when (see _taken).
        self._taken_since: dict[str, float] = {}
        # Connections taken up from the record of a node not yet found dead: its purge, when
        # it comes, removes their groups from presence, which are written again then.
        self._revived: dict[str, list[HubConnection]] = {}
        node.on_node_dead(self._node_dead)
        # --durable-resume: this node records its stateful connections.
        self.recorder: DurableRecorder | None = None
        if durable:
            self.recorder = DurableRecorder(node, disconnect_timeout, node.heartbeat)
            self.recorder.on_taken = self._taken
            node.durable = self.recorder

    async def start(self) -> None:
        """Answer handover requests from other nodes."""
        await self.calls.start()
        if self.recorder is not None:
            self.recorder.start()

    def stop(self) -> None:
        """Stop answering; takers still waiting hear 503."""
        self.calls.stop()
        if self.recorder is not None:
            self.recorder.stop()

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
        connection = record.connection
        manager = connection.handler.lifetime if connection is not None else None
        if self.recorder is not None and isinstance(manager, RedisLifetimeManager):
            assert connection is not None
            self.recorder.attach(manager, connection, key)  # no-op when attached already

    def closing(self, record: ConnectionRecord) -> None:
        """The server ends a stateful connection: its resume entry is deleted first. The
        command is queued ahead of the connection's next record, and with --durable-resume the
        Close waits behind that record, so no node can revive what the server ended."""
        self._forget(record)

    def _forget(self, record: ConnectionRecord) -> None:
        self._taken_since.pop(record.token, None)
        if record.stateful and record.connection is not None:
            key = self._key(record.token)
            self.bus.command(
                "EVALSHA",
                self._forget_sha,
                3,
                key,
                resume_log_key(key, self.node.cluster),
                resume_pos_key(key, self.node.cluster),
                self.node.node_id,
                keep=True,
            )

    def _taken(self, connection: ClientConnection) -> bool:
        """Another node claimed the entry of a connection recorded here. That node asks for
        the connection next (a live handover) unless it found this one dead and took the
        connection up from its record: then, once no handover came in the time a taker waits
        for one, the connection ends here without its hooks. True when it was ended."""
        record = next(
            (r for r in self.registry.records.values() if r.connection is connection), None
        )
        if record is None:
            return True
        if record.moving:
            return False
        now = asyncio.get_running_loop().time()
        since = self._taken_since.setdefault(record.token, now)
        if now - since < self.quiesce_timeout + CLOSE_TIMEOUT + 2.0:
            return False
        del self._taken_since[record.token]
        assert isinstance(connection, HubConnection)
        logger.warning("%s: another node took it over: it ends here", connection.log_name)
        record.moved = True
        if record.expiry is not None:
            record.expiry.cancel()
            record.expiry = None
        connection.outbound.on_close = None
        self.registry.remove(record.token)
        self.tasks.spawn(connection.transport_closed(moved=True))
        if record.drop is not None:
            record.drop()
        return True

    # -- taker -------------------------------------------------------------------------------

    async def take_up(
        self,
        token: str,
        path: str,
        user: User | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> tuple[ConnectionRecord, HubConnection] | int:
        """Take the connection of ``token`` from the node holding it (or, with a record, from
        its record when that node died); an HTTP status if not."""
        handler = self.handlers.get(path)
        if handler is None or not isinstance(handler.lifetime, RedisLifetimeManager):
            return 404
        manager = handler.lifetime
        key = self._key(token)
        me = self.node.node_id
        try:
            raw = await self.bus.query("HGETALL", key)
            entry = {k.decode(): v for k, v in (raw or {}).items()}
            if not entry or entry.get("hub") != path.encode():
                return 404
            cid, holder = entry["id"].decode(), entry["node"].decode()
            uid = user.id if user is not None else ""
            if entry.get("user", b"").decode() != uid:
                handler.stats.resumes["refused"] += 1
                logger.info("connection %s: a resume by another user refused", cid)
                return 403
            # Recorded by the node that holds it (a node that took it over since and records
            # nothing would leave a stale record).
            durable = entry.get("durable", b"").decode() == holder
            live = holder != me and await self.node.is_live(holder)
            if not live and not durable:
                handler.stats.resumes["refused"] += 1
                logger.info(
                    "connection %s: its node %s is gone: the resume is refused", cid, holder
                )
                return 404
            if holder == me:
                return 404
            if not await self.bus.query("EVALSHA", self._move_sha, 1, key, holder, me):
                return 409
            if durable:
                groups = [str(g) for g in msgpack.unpackb(entry.get("groups", b"\x90"))]
            else:
                groups = [
                    g.decode()
                    for g in await self.bus.query("SMEMBERS", manager.keys.groups_of(cid))
                ]
        except BackplaneUnavailable:
            return 503
        except (KeyError, ValueError, msgpack.UnpackException) as exc:
            logger.warning("a malformed resume entry: %s", exc)
            return 404
        await manager.capture(cid, uid or None, groups)
        if live:
            timeout = self.quiesce_timeout + CLOSE_TIMEOUT + 2.0
            status, state = await self.calls.call(holder, HANDOVER, [token, path], timeout)
        else:
            status, state = 404, None
        connection: HubConnection | None = None
        delivered: Positions = {}
        revived = False
        recorded = 0  # what the record in Redis holds already
        if status == 200:
            try:
                connection = moving.restore(handler, state, user=user, headers=headers, query=query)
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("connection %s: cannot take it up: %s", cid, exc)
            else:
                groups = list(state.get("groups") or ())
                delivered = read_positions(state.get("positions"))
        elif status == 404 and durable:
            # No node answers for the holder: it died. Its record holds what it sent.
            revival = await self._revive(handler, manager, key, holder, cid, user, headers, query)
            if revival is not None:
                connection, groups, delivered, recorded = revival
                revived = True
        if connection is None:
            manager.end_capture(cid)
            self.bus.command("EVALSHA", self._move_sha, 1, key, me, holder, keep=True)
            handler.stats.resumes["refused"] += 1
            logger.info("connection %s: %s did not hand it over (%d)", cid, holder, status)
            return 404 if status != 503 else 503
        await manager.adopt(connection, groups, delivered)
        if self.recorder is not None:
            # Recorded from now on (its groups are known now), the first record holding
            # everything sent since what Redis has: the replay, then history and capture.
            self.recorder.attach(manager, connection, key, sent=recorded, positions=delivered)
        if revived and not self.node.is_dead(holder):
            revived_here = self._revived.setdefault(holder, [])
            revived_here[:] = [c for c in revived_here if not c.closing]
            revived_here.append(connection)
        record = self.registry.moved_in(token, cid, path, user)
        record.connection = connection
        record.revived = revived
        if self.owners:
            self.bus.command("SET", owner_key(self.node.prefix, cid), me, keep=True)
            record.owned = True
        how = "from its record (its node died)" if revived else "from node"
        logger.info("%s: taken over %s %s", connection.log_name, how, holder)
        return record, connection

    def _node_dead(self, node_id: str) -> None:
        for connection in self._revived.pop(node_id, ()):
            manager = connection.handler.lifetime
            if not isinstance(manager, RedisLifetimeManager) or connection.closing:
                continue
            if manager.connections.get(connection.connection_id) is connection:
                self.node.connection_added(manager, connection)
                for group in connection.groups:
                    self.node.group_added(manager, connection.connection_id, group)

    async def _revive(
        self,
        handler: HubConnectionHandler,
        manager: RedisLifetimeManager,
        key: bytes,
        holder: str,
        cid: str,
        user: User | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> tuple[HubConnection, list[str], Positions, int] | None:
        """The connection of a dead ``holder``, from its record and its channels' history,
        with everything the holder did not deliver queued in order; None when that may miss
        something (``revive.Refused``). The entry is claimed and the capture runs."""
        try:
            record = await revive.read_record(self.bus, key)
            revive.check_record(record, holder)
            # The groups may have changed since the capture started: capture those too
            # before the history is read, so every message is in one or the other.
            await manager.extend_capture(cid, record.groups)
            channels = manager.channels_of(cid, record.user or None, record.groups)
            missing = [c for c in channels if c not in record.since]
            if missing:
                raise revive.Refused(f"the record does not say since when it has {missing}")
            since = {c: record.since[c] for c in channels}
            histories = await revive.read_history(self.bus, self.node.prefix, since)
            plan = revive.plan(cid, record, histories)
        except revive.Refused as exc:
            logger.warning("connection %s: cannot be taken up after its node died: %s", cid, exc)
            return None
        except BackplaneUnavailable:
            return None
        state = {
            "layout": moving.LAYOUT,
            "id": cid,
            "protocol": record.protocol,
            "user": record.user or None,
            "groups": record.groups,
            "buffer": [record.sent, record.acked, [[n, data] for n, data in record.log]],
            "items": {},
        }
        try:
            connection = moving.restore(handler, state, user=user, headers=headers, query=query)
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("connection %s: cannot take it up: %s", cid, exc)
            return None
        for _, invocation in plan.messages:
            connection.write_serialized(SerializedMessage(None, invocation.payloads))
        handler.stats.revived_messages += len(plan.messages)
        logger.info(
            "connection %s: its node %s died; %d messages from its record, %d from history",
            cid,
            holder,
            len(record.log),
            len(plan.messages),
        )
        return connection, record.groups, plan.delivered, record.sent

    # -- holder ------------------------------------------------------------------------------

    async def _serve(self, method: str, args: list[Any]) -> Answer:
        token, path = str(args[0]), str(args[1])
        record = self.registry.get(token)
        if record is None or record.hub_path != path or record.connection is None:
            return 410, None  # not here (404 means: no node answered)
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
            self._taken_since.pop(token, None)
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
