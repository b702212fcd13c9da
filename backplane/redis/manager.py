"""The Redis lifetime manager: one hub spread over many nodes.

Each node delivers to its own connections directly and publishes once for the others, in
the ASP.NET Core backplane's layout. Its own broadcasts carry its node name as a trailing
element so it can skip them when they come back. Subscriptions follow local membership:
the node's connections, users with local connections, groups with local members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from ..errors import ClientDisconnectedError, ConnectionNotFoundError
from ..lifetime.base import (
    DISCONNECTED,
    HubLifetimeManager,
    SerializedMessage,
    completion_outcome,
    invoke_local,
    new_invocation_id,
    not_found,
    timed_out,
    write_many,
)
from ..presence import Presence
from ..protocol import HubProtocol, get_protocol
from ..protocol.messages import CompletionMessage, InvocationMessage
from . import wire
from .bus import BackplaneUnavailable
from .keys import PresenceKeys

if TYPE_CHECKING:
    from ..connection import HubConnection
    from .node import RedisNode

logger = logging.getLogger("hubplane.redis")

# How long a group command waits for the owner's ack (as .NET) ...
ACK_TIMEOUT = 30.0
# ... and how long when no live node is known to own the connection.
UNKNOWN_OWNER_GRACE = 1.0


class RedisLifetimeManager(HubLifetimeManager):
    """Connections of one hub on this node, and the routes to the rest of the cluster."""

    #: False for a publisher without clients of its own (the emitter).
    serves_clients = True

    def __init__(self, node: RedisNode, hub_name: str, protocols: Sequence[str]) -> None:
        self.node = node
        self.bus = node.bus
        self.node_id = node.node_id
        self.channels = wire.Channels(hub_name, node.prefix)
        self.keys = PresenceKeys(self.channels.base)
        wanted = [p for p in node.payload_protocols if p in protocols] or list(protocols)
        protos = [get_protocol(p) for p in wanted]
        #: The protocols each published message carries (see RedisNode.payload_protocols).
        self.protocols: list[HubProtocol] = [p for p in protos if p is not None]
        self.connections: dict[str, HubConnection] = {}
        self.groups: dict[str, dict[str, HubConnection]] = {}
        self.users: dict[str, dict[str, HubConnection]] = {}
        self.presence: RedisPresence = RedisPresence(self)
        self._ack_id = 0
        self._acks: dict[int, asyncio.Future[None]] = {}
        # Group commands awaiting their ack, by id: sent again when our subscriber comes
        # back, since an ack published while it was away is lost (add/remove are idempotent).
        self._unacked: dict[int, bytes] = {}
        self._results: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster: start the node (once) and subscribe to the hub's fixed channels."""
        # One start, however many callers arrive at once (the emitter starts on first use).
        async with self._start_lock:
            if self._started:
                return
            self.bus.on_resubscribed(self._resend_group_commands)
            await self.node.start()
            ch = self.channels
            bus = self.bus
            await bus.subscribe(ch.ack(self.node_id), self._on_ack)
            await bus.subscribe(ch.return_channel(self.node_id), self._on_return)
            if self.serves_clients:
                await bus.subscribe(ch.all, self._on_all)
                await bus.subscribe(ch.internal_groups, self._on_group_command)
                await bus.subscribe(ch.control, self._on_control)
            self._started = True

    async def stop(self) -> None:
        """Leave the cluster (the node stops once every hub has stopped)."""
        if not self._started:
            return
        self._started = False
        for task in list(self._tasks):
            task.cancel()
        for fut in [*self._acks.values(), *self._results.values()]:
            if not fut.done():
                fut.set_exception(BackplaneUnavailable("the node is stopping"))
        if all(not m._started for m in self.node.managers):
            await self.node.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- membership --------------------------------------------------------------------------

    async def on_connected(self, connection: HubConnection) -> None:
        """Register a local connection and subscribe to its channel (and its user's)."""
        cid = connection.connection_id
        self.connections[cid] = connection
        self.node.connection_added(self, connection)

        def on_message(_channel: bytes, data: bytes) -> None:
            self._on_connection_message(cid, data)

        waits = [self.bus.subscribe(self.channels.connection(cid), on_message)]
        user = connection.user
        if user is not None:
            conns = self.users.get(user.id)
            if conns is None:
                conns = self.users[user.id] = {}
                waits.append(self.bus.subscribe(self.channels.user(user.id), self._on_user))
            conns[cid] = connection
        await asyncio.gather(*waits)

    async def on_disconnected(self, connection: HubConnection) -> None:
        """Forget a local connection, its groups and its user; drop unneeded subscriptions."""
        cid = connection.connection_id
        if self.connections.pop(cid, None) is None:
            return
        self.bus.unsubscribe(self.channels.connection(cid))
        for group in connection.groups:
            self._leave_local(group, cid)
        connection.clear_groups()
        user = connection.user
        if user is not None:
            conns = self.users.get(user.id)
            if conns is not None:
                conns.pop(cid, None)
                if not conns:
                    del self.users[user.id]
                    self.bus.unsubscribe(self.channels.user(user.id))
        self.node.connection_removed(self, cid)

    def _leave_local(self, group: str, cid: str) -> bool:
        members = self.groups.get(group)
        if members is None or members.pop(cid, None) is None:
            return False
        if not members:
            del self.groups[group]
            self.bus.unsubscribe(self.channels.group(group))
        return True

    async def _add_local(self, connection: HubConnection, group: str) -> None:
        cid = connection.connection_id
        if group in connection.groups:
            return
        connection.add_group(group)
        members = self.groups.get(group)
        self.node.group_added(self, cid, group)
        if members is None:
            self.groups[group] = {cid: connection}
            await self.bus.subscribe(self.channels.group(group), self._on_group)
        else:
            members[cid] = connection

    def _remove_local(self, connection: HubConnection, group: str) -> None:
        cid = connection.connection_id
        connection.discard_group(group)
        if self._leave_local(group, cid):
            self.node.group_removed(self, cid, group)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add a connection, wherever it is connected, to a group."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            await self._add_local(connection, group)
        else:
            await self._group_command(wire.GROUP_ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Remove a connection, wherever it is connected, from a group."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            self._remove_local(connection, group)
        else:
            await self._group_command(wire.GROUP_REMOVE, connection_id, group)

    async def _group_command(self, action: int, connection_id: str, group: str) -> None:
        """Ask the owner of a remote connection to change its groups, and wait for its ack.

        Fails within about a second when no live node owns the connection (.NET waits
        30 s), using the presence table to tell a slow owner from a missing one.
        """
        if not self.bus.connected:
            # Fail now rather than buffer a change the caller is told has failed.
            raise BackplaneUnavailable(
                f"Redis is unreachable: cannot change the groups of connection '{connection_id}'"
            )
        self._ack_id = command_id = wire.next_command_id(self._ack_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[command_id] = future
        data = wire.write_group_command(
            wire.GroupCommand(command_id, self.node_id, action, group, connection_id)
        )
        self._unacked[command_id] = data
        try:
            self.bus.publish(self.channels.internal_groups, data)
            owner = await self.presence.owner_of(connection_id)
            owned = owner is not None and await self.node.is_live(owner)
            try:
                await asyncio.wait_for(
                    asyncio.shield(future), ACK_TIMEOUT if owned else UNKNOWN_OWNER_GRACE
                )
            except TimeoutError:
                if owned:
                    raise TimeoutError(
                        f"Node {owner} did not acknowledge the group change of "
                        f"connection '{connection_id}' in time."
                    ) from None
                raise ConnectionNotFoundError(
                    f"Connection '{connection_id}' does not exist."
                ) from None
        finally:
            self._acks.pop(command_id, None)
            self._unacked.pop(command_id, None)

    async def invoke_connection(
        self, connection_id: str, method: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Call ``method`` on one client, on any node, and return its result.

        A remote call travels in the 4-element invocation with this node's return channel.
        It fails at once when no node is subscribed to the connection (PUBLISH reached
        nobody), and within the presence timeout when the owning node dies meanwhile.
        """
        connection = self.connections.get(connection_id)
        if connection is not None:
            return await invoke_local(connection, method, args, timeout)
        invocation_id = new_invocation_id()
        message = SerializedMessage(InvocationMessage(method, args, invocation_id=invocation_id))
        data = wire.write_invocation(
            self._payloads(message),
            invocation_id=invocation_id,
            return_channel=self.channels.return_channel_name(self.node_id),
        )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[invocation_id] = future
        try:
            receivers = await self.bus.publish_counted(
                self.channels.connection(connection_id), data
            )
            if receivers == 0:
                raise not_found(connection_id)
            owner = await self.presence.owner_of(connection_id)
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                step = self.node.timeout
                if deadline is not None:
                    step = min(step, deadline - loop.time())
                    if step <= 0:
                        raise timed_out(connection_id, timeout)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), step)
                except TimeoutError:
                    if owner is not None and not await self.node.is_live(owner):
                        raise ClientDisconnectedError(DISCONNECTED) from None
        finally:
            self._results.pop(invocation_id, None)

    def _on_return(self, channel: bytes, data: bytes) -> None:
        try:
            protocol_name, framed = wire.read_completion(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed completion from Redis: %s", exc)
            return
        protocol = get_protocol(protocol_name)
        if protocol is None:
            logger.warning(
                "a completion in unknown protocol %r (mismatched servers?)", protocol_name
            )
            return
        try:
            messages, _ = protocol.parse_messages(framed)
        except Exception as exc:
            logger.warning("dropping an unreadable completion from Redis: %s", exc)
            return
        for completion in messages:
            if isinstance(completion, CompletionMessage):
                future = self._results.get(completion.invocation_id)
                if future is not None:
                    completion_outcome(completion, future)

    def _resend_group_commands(self) -> None:
        for data in self._unacked.values():
            self.bus.publish(self.channels.internal_groups, data)

    async def abort_connection(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            connection.abort()
            return
        self.bus.publish(
            self.channels.control, wire.write_control(wire.CONTROL_ABORT_CONNECTION, connection_id)
        )

    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user, on every node."""
        for connection in list(self.users.get(user_id, {}).values()):
            connection.abort()
        self.bus.publish(
            self.channels.control, wire.write_control(wire.CONTROL_ABORT_USER, user_id)
        )

    # -- sending -----------------------------------------------------------------------------

    def _payloads(self, message: SerializedMessage) -> dict[str, bytes]:
        return {p.name: message.get(p) for p in self.protocols}

    def _publish(
        self,
        channel: bytes,
        message: SerializedMessage,
        exclude: Collection[str] | None = None,
    ) -> None:
        self.bus.publish(
            channel,
            wire.write_invocation(self._payloads(message), exclude, origin=self.node_id),
        )

    @staticmethod
    def _message(method: str, args: list[Any]) -> SerializedMessage:
        return SerializedMessage(InvocationMessage(method, args))

    async def send_all(
        self, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        """Send to every connection of the hub except those in ``exclude``."""
        message = self._message(method, args)
        self._publish(self.channels.all, message, exclude)
        write_many(self.connections, message, exclude)

    async def send_connection(self, connection_id: str, method: str, args: list[Any]) -> None:
        """Send to one connection, wherever it is connected."""
        message = self._message(method, args)
        connection = self.connections.get(connection_id)
        if connection is not None:
            connection.write_serialized(message)
        else:
            self._publish(self.channels.connection(connection_id), message)

    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: list[Any]
    ) -> None:
        """Send to each listed connection, wherever it is connected."""
        message = self._message(method, args)
        for cid in connection_ids:
            connection = self.connections.get(cid)
            if connection is not None:
                connection.write_serialized(message)
            else:
                self._publish(self.channels.connection(cid), message)

    async def send_group(
        self, group: str, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        """Send to the members of ``group`` on every node, except those in ``exclude``."""
        message = self._message(method, args)
        self._publish(self.channels.group(group), message, exclude)
        members = self.groups.get(group)
        if members:
            write_many(members, message, exclude)

    async def send_groups(self, groups: Collection[str], method: str, args: list[Any]) -> None:
        """Send to the members of each listed group (once per group, as ASP.NET Core does)."""
        message = self._message(method, args)
        for group in groups:
            self._publish(self.channels.group(group), message)
            members = self.groups.get(group)
            if members:
                write_many(members, message, None)

    async def send_user(self, user_id: str, method: str, args: list[Any]) -> None:
        """Send to every connection of a user on every node."""
        message = self._message(method, args)
        self._publish(self.channels.user(user_id), message)
        conns = self.users.get(user_id)
        if conns:
            write_many(conns, message, None)

    async def send_users(self, user_ids: Collection[str], method: str, args: list[Any]) -> None:
        """Send to every connection of each listed user on every node."""
        message = self._message(method, args)
        for uid in user_ids:
            self._publish(self.channels.user(uid), message)
            conns = self.users.get(uid)
            if conns:
                write_many(conns, message, None)

    # -- receiving ---------------------------------------------------------------------------

    def _read(self, data: bytes) -> wire.RedisInvocation | None:
        try:
            invocation = wire.read_invocation(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed invocation from Redis: %s", exc)
            return None
        if invocation.origin == self.node_id:
            return None  # ours: already delivered locally
        return invocation

    def _on_all(self, channel: bytes, data: bytes) -> None:
        invocation = self._read(data)
        if invocation is not None:
            message = SerializedMessage(None, invocation.payloads)
            excluded = set(invocation.excluded) if invocation.excluded else None
            write_many(self.connections, message, excluded)

    def _on_group(self, channel: bytes, data: bytes) -> None:
        invocation = self._read(data)
        if invocation is None:
            return
        group = channel[len(self.channels.base) + len(b":group:") :].decode()
        members = self.groups.get(group)
        if members:
            message = SerializedMessage(None, invocation.payloads)
            excluded = set(invocation.excluded) if invocation.excluded else None
            write_many(members, message, excluded)

    def _on_user(self, channel: bytes, data: bytes) -> None:
        invocation = self._read(data)
        if invocation is None:
            return
        user = channel[len(self.channels.base) + len(b":user:") :].decode()
        conns = self.users.get(user)
        if conns:
            write_many(conns, SerializedMessage(None, invocation.payloads), None)

    def _on_connection_message(self, cid: str, data: bytes) -> None:
        invocation = self._read(data)
        if invocation is None:
            return
        connection = self.connections.get(cid)
        if connection is not None and connection.closing:
            connection = None  # ending: its pending results have already been failed
        if invocation.invocation_id and invocation.return_channel:
            # A client result asked for by another node: answer on its return channel.
            return_channel = self.node.prefix + invocation.return_channel.encode()
            invocation_id = invocation.invocation_id
            if connection is None:
                self._return_completion(
                    return_channel,
                    "json",
                    CompletionMessage.with_error(invocation_id, DISCONNECTED),
                )
                return

            def forward(completion: CompletionMessage, conn: HubConnection = connection) -> None:
                proto = conn.protocol
                self._return_completion(return_channel, proto.name if proto else "json", completion)

            connection.results[invocation_id] = forward
        if connection is not None:
            connection.write_serialized(SerializedMessage(None, invocation.payloads))

    def _return_completion(
        self, channel: bytes, protocol_name: str, completion: CompletionMessage
    ) -> None:
        protocol = get_protocol(protocol_name) or get_protocol("json")
        assert protocol is not None
        try:
            framed = protocol.write_message(completion)
        except Exception as exc:
            framed = protocol.write_message(
                CompletionMessage.with_error(
                    completion.invocation_id, f"Client result could not be encoded: {exc}"
                )
            )
        self.bus.publish(channel, wire.write_completion(protocol.name, framed))

    def _on_group_command(self, channel: bytes, data: bytes) -> None:
        try:
            command = wire.read_group_command(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed group command from Redis: %s", exc)
            return
        connection = self.connections.get(command.connection_id)
        if connection is None or connection.closing:
            return  # not ours (or ending: no ack, and the sender fails within a second)
        self._spawn(self._apply_group_command(connection, command))

    async def _apply_group_command(
        self, connection: HubConnection, command: wire.GroupCommand
    ) -> None:
        if self.connections.get(connection.connection_id) is not connection:
            return  # it left meanwhile
        if command.action == wire.GROUP_ADD:
            await self._add_local(connection, command.group)
        elif command.action == wire.GROUP_REMOVE:
            self._remove_local(connection, command.group)
        self.bus.publish(self.channels.ack(command.server), wire.write_ack(command.id))

    def _on_ack(self, channel: bytes, data: bytes) -> None:
        try:
            command_id = wire.read_ack(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed ack from Redis: %s", exc)
            return
        future = self._acks.get(command_id)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_control(self, channel: bytes, data: bytes) -> None:
        try:
            kind, target = wire.read_control(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed control message from Redis: %s", exc)
            return
        if kind == wire.CONTROL_ABORT_CONNECTION:
            connection = self.connections.get(target)
            if connection is not None:
                connection.abort()
        elif kind == wire.CONTROL_ABORT_USER:
            for connection in list(self.users.get(target, {}).values()):
                connection.abort()


def _decode_list(raw: Any) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]


class RedisPresence(Presence):
    """Presence of one hub across the cluster, read from Redis."""

    def __init__(self, manager: RedisLifetimeManager) -> None:
        self._manager = manager

    async def _query(self, *args: Any) -> Any:
        return await self._manager.bus.query(*args)

    async def connections(self) -> list[str]:
        """The ids of every connection of the hub."""
        return _decode_list(await self._query("HKEYS", self._manager.keys.conns))

    async def group_members(self, group: str) -> list[str]:
        """The ids of the connections in ``group``."""
        return _decode_list(await self._query("SMEMBERS", self._manager.keys.group(group)))

    async def user_connections(self, user: str) -> list[str]:
        """The ids of the connections of ``user``."""
        return _decode_list(await self._query("SMEMBERS", self._manager.keys.user(user)))

    async def is_user_online(self, user: str) -> bool:
        """True when ``user`` has at least one connection."""
        return int(await self._query("SCARD", self._manager.keys.user(user))) > 0

    async def groups_of(self, connection_id: str) -> list[str]:
        """The groups a connection is in (empty for an unknown connection)."""
        keys = self._manager.keys
        return sorted(_decode_list(await self._query("SMEMBERS", keys.groups_of(connection_id))))

    async def count_connections(self) -> int:
        """How many connections the hub has."""
        return int(await self._query("HLEN", self._manager.keys.conns))

    async def owner_of(self, connection_id: str) -> str | None:
        """The node that owns a connection, if presence knows it."""
        raw = await self._query("HGET", self._manager.keys.conns, connection_id)
        if raw is None:
            return None
        try:
            node, _user = msgpack.unpackb(raw, raw=False)[:2]
        except Exception:
            return None
        return node if isinstance(node, str) else None

    async def nodes(self) -> list[dict[str, Any]]:
        """One dict per live node serving this hub."""
        manager = self._manager
        node = manager.node
        live = await node.live_nodes()
        result: list[dict[str, Any]] = []
        base = manager.keys.base
        for node_id, last in sorted(live.items()):
            info = await self._query("HGETALL", node.node_key_of(node_id))
            hubs_raw = info.get(b"hubs")
            try:
                hubs = msgpack.unpackb(hubs_raw, raw=True) if hubs_raw else []
            except Exception:
                hubs = []
            if base not in hubs:
                continue
            count = int(await self._query("SCARD", manager.keys.node(node_id)))
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
