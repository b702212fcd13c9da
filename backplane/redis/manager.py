"""The Redis lifetime manager: one hub spread over many nodes.

Each node delivers to its own connections directly and publishes once for the others, in
the ASP.NET Core backplane's layout. Its own broadcasts carry its node name as a trailing
element so it can skip them when they come back. Subscriptions follow local membership:
the node's connections, users with local connections, groups with local members.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..lifetime.base import (
    TO_ALL,
    TO_CONNECTION,
    TO_GROUP,
    ClientConnection,
    HubLifetimeManager,
    SerializedMessage,
    write_many,
)
from ..lifetime.registry import Change, ConnectionRegistry
from ..lifetime.results import ClientResults
from ..lifetime.usergroups import join_user_groups
from ..protocol import HubProtocol, get_protocol
from ..protocol.messages import InvocationMessage
from . import wire
from .bus import BackplaneUnavailable
from .capture import Capture, Positions, positions
from .control import ControlChannel
from .groups import GroupCommands
from .keys import PresenceKeys
from .presence import RedisPresence
from .results import RemoteResults
from .usergroups import RedisUserGroups

if TYPE_CHECKING:
    from .base import ClusterNode

__all__ = ["PresenceKeys", "RedisLifetimeManager", "RedisPresence"]

logger = logging.getLogger("hubplane.redis")

# How long a group command waits for the owner's ack (as .NET) ...
ACK_TIMEOUT = 30.0
# ... and how long when no live node is known to own the connection.
UNKNOWN_OWNER_GRACE = 1.0


class RedisLifetimeManager(HubLifetimeManager):
    """Connections of one hub on this node, and the routes to the rest of the cluster."""

    #: False for a publisher without clients of its own (the emitter).
    serves_clients = True

    def __init__(self, node: ClusterNode, hub_name: str, protocols: Sequence[str]) -> None:
        self.node = node
        self.bus = node.bus
        self.node_id = node.node_id
        self.channels = wire.Channels(hub_name, node.prefix)
        self.keys = PresenceKeys(self.channels.base, node.cluster)
        wanted = [p for p in node.payload_protocols if p in protocols] or list(protocols)
        protos = [get_protocol(p) for p in wanted]
        #: The protocols each published message carries (see RedisNode.payload_protocols).
        self.protocols: list[HubProtocol] = [p for p in protos if p is not None]
        self.registry = registry = ConnectionRegistry()
        # The registry's own dicts, bound here so fan-out reads them with no extra lookup.
        self.connections = registry.connections
        self.groups = registry.groups
        self.users = registry.users
        self.presence: RedisPresence = RedisPresence(node, self.keys)
        self.client_results = ClientResults()
        self.group_commands = GroupCommands(
            node,
            self.channels,
            self.presence,
            registry.connections,
            self._add_local,
            self._remove_local,
            ack_timeout=ACK_TIMEOUT,
            unknown_owner_grace=UNKNOWN_OWNER_GRACE,
        )
        self.remote_results = RemoteResults(
            node,
            self.channels,
            self.presence,
            self.client_results,
            self._payloads,
            lambda: self.client_result_timeout,
        )
        self.control = ControlChannel(self.bus, self.channels, registry)
        self.user_groups = RedisUserGroups(self.bus, self.channels.base)
        # Exactly once over Redis: numbers on what is published, checks on what is heard.
        self.sequence = node.published
        self.received = node.received
        # Watched channels keep history (``history.py``): bound for the publishing path.
        self.history = node.history
        self._watched = node.history.channels
        # Connections moving here from another node: what arrives for them meanwhile; then,
        # once moved, what their former node delivered already (copies still on their way).
        self._captures: dict[str, Capture] = {}
        self._fences: dict[str, Capture] = {}
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._started

    async def start(self) -> None:
        """Join the cluster: start the node (once) and subscribe to the hub's fixed channels."""
        # One start, however many callers arrive at once (the emitter starts on first use).
        async with self._start_lock:
            if self._started:
                return
            self.bus.on_resubscribed(self.group_commands.resend)
            await self.node.start()
            ch = self.channels
            bus = self.bus
            await bus.subscribe(ch.ack(self.node_id), self.group_commands.on_ack)
            await bus.subscribe(ch.return_channel(self.node_id), self.remote_results.on_return)
            if self.serves_clients:
                await bus.subscribe(ch.all, self._on_all)
                await bus.subscribe(ch.internal_groups, self.group_commands.on_command)
                await bus.subscribe(ch.control, self.control.on_message)
            self._started = True

    async def stop(self) -> None:
        """Leave the cluster (the node stops once every hub has stopped)."""
        if not self._started:
            return
        self._started = False
        self.group_commands.stop()
        self.client_results.fail_all(lambda: BackplaneUnavailable("the node is stopping"))
        if all(not m.started for m in self.node.managers):
            await self.node.stop()

    # -- membership --------------------------------------------------------------------------

    async def on_connected(self, connection: ClientConnection) -> None:
        """Register a local connection and subscribe to its channel (and its user's)."""
        cid = connection.connection_id
        first_of_user = self.registry.add(connection)
        self.node.connection_added(self, connection)
        waits = [self._subscribe_connection(cid)]
        user = connection.user
        if first_of_user and user is not None:
            waits.append(self.bus.subscribe(self.channels.user(user.id), self._on_user))
        await asyncio.gather(*waits)
        # After the presence entry (queued above), so a REST call adding the user to a group
        # either lists this connection or has written the record this reads.
        uid = user.id if user is not None else None
        await join_user_groups(self.user_groups, connection, uid, self._add_local)

    async def on_disconnected(self, connection: ClientConnection) -> None:
        """Forget a local connection, its groups and its user; drop unneeded subscriptions."""
        cid = connection.connection_id
        durable = self.node.durable
        if durable is not None:
            durable.forget(connection)
        groups = tuple(connection.groups)  # presence removes them too: every key is named
        removal = self.registry.remove(connection)
        if removal is None:
            return
        self._unsubscribe(self.channels.connection(cid))
        for group in removal.groups:
            self._unsubscribe(self.channels.group(group))
        if removal.user is not None:
            self._unsubscribe(self.channels.user(removal.user))
        user = connection.user
        self.node.connection_removed(self, cid, user.id if user is not None else None, groups)

    def _subscribe_connection(self, cid: str) -> Awaitable[None]:
        def on_message(channel: bytes, data: bytes) -> None:
            self._on_connection_message(cid, channel, data)

        return self.bus.subscribe(self.channels.connection(cid), on_message)

    def _unsubscribe(self, channel: bytes) -> None:
        self.bus.unsubscribe(channel)
        # A later subscription hears the channel afresh: what it missed is no gap.
        self.received.forget_channel(channel)

    async def _add_local(self, connection: ClientConnection, group: str) -> None:
        change = self.registry.join(connection, group, self.max_groups_per_connection)
        if not change:
            return
        self.node.group_added(self, connection.connection_id, group)
        recorded = self._recorded(connection)
        if change is Change.GROUP:
            await self.bus.subscribe(self.channels.group(group), self._on_group)
        if recorded is not None:
            await recorded

    def _remove_local(self, connection: ClientConnection, group: str) -> None:
        self._leave(connection, group)

    def _leave(self, connection: ClientConnection, group: str) -> asyncio.Future[None] | None:
        change = self.registry.leave(connection, group)
        if change is Change.GROUP:
            self._unsubscribe(self.channels.group(group))
        if not change:
            return None
        self.node.group_removed(self, connection.connection_id, group)
        return self._recorded(connection)

    def _recorded(self, connection: ClientConnection) -> asyncio.Future[None] | None:
        """A durable connection's groups changed: done once its record says so."""
        durable = self.node.durable
        return durable.changed(connection) if durable is not None else None

    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add a connection, wherever it is connected, to a group."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            await self._add_local(connection, group)
        else:
            await self.group_commands.send(wire.GROUP_ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Remove a connection, wherever it is connected, from a group."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            recorded = self._leave(connection, group)
            if recorded is not None:
                await recorded
        else:
            await self.group_commands.send(wire.GROUP_REMOVE, connection_id, group)

    async def invoke_connection(
        self, connection_id: str, method: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Call ``method`` on one client, on any node, and return its result."""
        connection = self.connections.get(connection_id)
        if connection is not None:
            return await self.client_results.invoke_local(connection, method, args, timeout)
        return await self.remote_results.invoke(connection_id, method, args, timeout)

    async def abort_connection(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""
        self.control.abort_connection(connection_id)

    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user, on every node."""
        self.control.abort_user(user_id)

    async def close_connections(
        self,
        kind: str,
        name: str,
        reason: str | None = None,
        exclude: Collection[str] | None = None,
    ) -> None:
        """Close the addressed connections on every node, with ``reason`` (no reconnect)."""
        self.control.close(kind, name, reason, exclude)

    # -- sending -----------------------------------------------------------------------------

    def _payloads(self, message: SerializedMessage) -> dict[str, bytes]:
        return {p.name: message.get(p) for p in self.protocols}

    def _publish(
        self,
        channel: bytes,
        message: SerializedMessage,
        exclude: Collection[str] | None = None,
    ) -> None:
        seq, prev = self.sequence.next(channel, time.monotonic())
        if self._captures:
            self._offer(channel, self.node_id, seq, message, exclude)
        data = wire.write_invocation(
            self._payloads(message), exclude, origin=self.node_id, seq=seq, prev=prev
        )
        if not (self._watched and channel in self._watched and self.history.publish(channel, data)):
            self.bus.publish(channel, data)

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

    async def deliver(
        self,
        kind: str,
        name: str,
        message: SerializedMessage,
        exclude: Collection[str] | None = None,
    ) -> None:
        """Send a message whose bytes may be cached per protocol (a REST body's) as they are."""
        if kind != TO_ALL and kind != TO_GROUP:
            exclude = None  # as on the wire: only broadcasts and groups leave connections out
        targets = self.registry.audience(kind, name)
        if kind != TO_CONNECTION or not targets:
            self._publish(self.channels.audience(kind, name), message, exclude)
        if targets:
            write_many(targets, message, exclude)

    # -- receiving ---------------------------------------------------------------------------

    def _read(self, channel: bytes, data: bytes) -> wire.RedisInvocation | None:
        try:
            invocation = wire.read_invocation(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed invocation from Redis: %s", exc)
            return None
        origin = invocation.origin
        if origin is None:
            return invocation  # a .NET node, an older hubplane, a service: as it comes
        if origin == self.node_id:
            return None  # ours: already delivered locally
        if invocation.seq and not self.received.accept(
            origin, channel, invocation.seq, invocation.prev, time.monotonic()
        ):
            return None  # delivered already (the publisher sent its batch again)
        return invocation

    def _on_all(self, channel: bytes, data: bytes) -> None:
        invocation = self._read(channel, data)
        if invocation is not None:
            excluded = set(invocation.excluded) if invocation.excluded else None
            self._deliver_heard(self.connections, channel, invocation, excluded)

    def _on_group(self, channel: bytes, data: bytes) -> None:
        invocation = self._read(channel, data)
        if invocation is None:
            return
        group = channel[len(self.channels.base) + len(b":group:") :].decode()
        excluded = set(invocation.excluded) if invocation.excluded else None
        self._deliver_heard(self.groups.get(group), channel, invocation, excluded)

    def _on_user(self, channel: bytes, data: bytes) -> None:
        invocation = self._read(channel, data)
        if invocation is None:
            return
        user = channel[len(self.channels.base) + len(b":user:") :].decode()
        self._deliver_heard(self.users.get(user), channel, invocation, None)

    def _deliver_heard(
        self,
        targets: Mapping[str, ClientConnection] | None,
        channel: bytes,
        invocation: wire.RedisInvocation,
        excluded: set[str] | None,
    ) -> None:
        """Hand a message heard on ``channel`` to its local ``targets`` (but connections that
        moved here and got it from their former node) and to connections moving here."""
        captures = self._captures
        if not targets and not captures:
            return
        message = SerializedMessage(None, invocation.payloads)
        if targets:
            fenced = self._fence(channel, invocation, excluded) if self._fences else excluded
            write_many(targets, message, fenced)
        if captures:
            self._offer(channel, invocation.origin, invocation.seq, message, excluded)

    def _on_connection_message(self, cid: str, channel: bytes, data: bytes) -> None:
        invocation = self._read(channel, data)
        if invocation is None:
            return
        connection = self.connections.get(cid)
        if connection is not None and connection.closing:
            connection = None  # ending: its pending results have already been failed
        if invocation.invocation_id and invocation.return_channel:
            # A client result asked for by another node: answer on its return channel.
            self.remote_results.answer(
                connection, invocation.invocation_id, invocation.return_channel
            )
        if connection is not None:
            if self._fences and self._fence(channel, invocation, None):
                return  # its former node delivered this one already
            connection.write_serialized(SerializedMessage(None, invocation.payloads))
        elif cid in self._captures and not invocation.return_channel:
            message = SerializedMessage(None, invocation.payloads)
            self._offer(channel, invocation.origin, invocation.seq, message, None)

    # -- connections moving between nodes (backplane/moving.py) -----------------------------

    def _offer(
        self,
        channel: bytes,
        origin: str | None,
        seq: int,
        message: SerializedMessage,
        excluded: Collection[str] | None,
    ) -> None:
        for capture in self._captures.values():
            capture.offer(channel, origin, seq, message, excluded)

    def _fence(
        self, channel: bytes, invocation: wire.RedisInvocation, excluded: set[str] | None
    ) -> set[str] | None:
        """``excluded`` plus the moved connections whose former node delivered this message."""
        origin, seq = invocation.origin, invocation.seq
        if origin is None or not seq:
            return excluded
        now = time.monotonic()
        for cid, capture in list(self._fences.items()):
            if now > capture.fence_until or not capture.delivered:
                del self._fences[cid]
            elif capture.fenced(channel, origin, seq):
                excluded = {cid} if excluded is None else excluded | {cid}
        return excluded

    def channels_for(self, connection: ClientConnection) -> list[bytes]:
        """Every channel that reaches ``connection``: all, its own, its groups', its user's."""
        user = connection.user
        return self.channels_of(
            connection.connection_id, user.id if user is not None else None, connection.groups
        )

    def channels_of(self, cid: str, user: str | None, groups: Collection[str]) -> list[bytes]:
        """Every channel that reaches connection ``cid`` of ``user`` in ``groups``."""
        ch = self.channels
        out = [ch.all, ch.connection(cid), *(ch.group(g) for g in groups)]
        if user is not None:
            out.append(ch.user(user))
        return out

    def positions(self, connection: ClientConnection) -> Positions:
        """Where delivery to ``connection`` stands on each of its channels (see capture.py)."""
        return positions(self.node_id, self.channels_for(connection), self.sequence, self.received)

    async def capture(self, cid: str, user: str | None, groups: Collection[str]) -> Capture:
        """Subscribe to a moving connection's channels and hold what arrives for it."""
        capture = self._captures[cid] = Capture(cid, self.channels_of(cid, user, groups))
        ch = self.channels
        waits = [self._subscribe_connection(cid)]
        capture.subscribed.append(ch.connection(cid))
        for group in groups:
            if group not in self.groups:
                waits.append(self.bus.subscribe(ch.group(group), self._on_group))
                capture.subscribed.append(ch.group(group))
        if user is not None and user not in self.users:
            waits.append(self.bus.subscribe(ch.user(user), self._on_user))
            capture.subscribed.append(ch.user(user))
        try:
            await asyncio.gather(*waits)
        except BaseException:
            self.end_capture(cid)
            raise
        return capture

    async def extend_capture(self, cid: str, groups: Collection[str]) -> None:
        """Capture ``groups`` too for a moving connection (its groups changed meanwhile)."""
        capture = self._captures.get(cid)
        if capture is None:
            return
        ch = self.channels
        new = [g for g in groups if ch.group(g) not in capture.channels]
        if not new:
            return
        capture.channels = capture.channels | {ch.group(g) for g in new}
        waits = []
        for group in new:
            if group not in self.groups:
                waits.append(self.bus.subscribe(ch.group(group), self._on_group))
                capture.subscribed.append(ch.group(group))
        await asyncio.gather(*waits)

    def end_capture(self, cid: str) -> None:
        """The move failed: drop what was held and the subscriptions no one else needs."""
        capture = self._captures.pop(cid, None)
        if capture is None:
            return
        ch = self.channels
        for channel in capture.subscribed:
            if channel == ch.connection(cid):
                needed = cid in self.connections
            elif channel.startswith(ch.base + b":group:"):
                needed = channel[len(ch.base) + len(b":group:") :].decode() in self.groups
            else:
                needed = channel[len(ch.base) + len(b":user:") :].decode() in self.users
            if not needed:
                self._unsubscribe(channel)

    async def adopt(
        self, connection: ClientConnection, groups: Collection[str], delivered: Positions
    ) -> None:
        """Take up a connection that moved here: register it with its groups and hand it what
        arrived for it meanwhile and was not ``delivered`` where it came from, all before the
        first await; then subscribe to what the capture did not (groups joined meanwhile)."""
        cid = connection.connection_id
        capture = self._captures.pop(cid, None)
        captured = capture.channels if capture is not None else frozenset()
        ch = self.channels
        late = [] if ch.connection(cid) in captured else [self._subscribe_connection(cid)]
        self.registry.add(connection)
        self.node.connection_added(self, connection)
        for group in groups:
            change = self.registry.join(connection, group)
            if change:
                self.node.group_added(self, cid, group)
            if ch.group(group) not in captured:
                late.append(self.bus.subscribe(ch.group(group), self._on_group))
        user = connection.user
        if user is not None and ch.user(user.id) not in captured:
            late.append(self.bus.subscribe(ch.user(user.id), self._on_user))
        if capture is not None:
            for message in capture.release(delivered, time.monotonic()):
                connection.write_serialized(message)
            if capture.delivered:
                self._fences[cid] = capture
        if late:
            await asyncio.gather(*late)
