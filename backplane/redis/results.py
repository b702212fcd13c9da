"""Client results across nodes: asking a client another node owns, and answering for ours.

A remote call travels in the 4-element invocation with the asking node's return channel;
the owner registers a waiter on the connection that publishes the client's Completion,
framed in the client's protocol, to that channel. The futures, timeouts and failures
belong to the manager's :class:`~backplane.lifetime.results.ClientResults`.

Each call remembers the node owning the client (from presence), so that when that node is
found dead the call fails at once, as for a client that disconnected.

On the owning node a forwarded call waits for its client at most the hub's client result
timeout (a moment longer, so that the asking node's own timeout, the same by default, is what
its caller hears), or :data:`FORWARD_LIMIT` without one: then it is forgotten and the asking
node is told, as a client that never answers must not hold memory for as long as it stays.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lifetime.base import DISCONNECTED, SerializedMessage
from ..lifetime.results import new_invocation_id, not_found
from ..protocol import get_protocol
from ..protocol.messages import CompletionMessage, InvocationMessage
from . import wire

if TYPE_CHECKING:
    from ..lifetime.base import ClientConnection
    from ..lifetime.results import ClientResults
    from .base import ClusterNode
    from .presence import RedisPresence

logger = logging.getLogger("hubplane.redis")

#: How long the owning node keeps a forwarded call without a client result timeout (s).
FORWARD_LIMIT = 600.0
#: How much longer than the timeout it keeps one: the asking node's own timeout comes first.
FORWARD_GRACE = 1.0


class RemoteResults:
    """One hub's routes for client results between nodes."""

    def __init__(
        self,
        node: ClusterNode,
        channels: wire.Channels,
        presence: RedisPresence,
        results: ClientResults,
        payloads: Callable[[SerializedMessage], dict[str, bytes]],
        timeout: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.node = node
        #: The hub's client result timeout (read when a call is forwarded here).
        self.timeout = timeout
        self.bus = node.bus
        self.channels = channels
        self.presence = presence
        self.results = results
        self.payloads = payloads
        self._owners: dict[str, str] = {}  # invocation id -> the node owning the client
        node.on_node_dead(self._node_dead)

    async def invoke(
        self, connection_id: str, method: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Ask a client on another node for a result and wait for it.

        Fails at once when no node is subscribed to the connection (PUBLISH reached
        nobody), and when the owning node is found dead meanwhile (within about 2 s of a
        crash, within the presence timeout when it is cut off).
        """
        invocation_id = new_invocation_id()
        message = SerializedMessage(InvocationMessage(method, args, invocation_id=invocation_id))
        node = self.node
        data = wire.write_invocation(
            self.payloads(message),
            invocation_id=invocation_id,
            return_channel=self.channels.return_channel_name(node.node_id),
        )
        results = self.results
        future = results.expect(invocation_id)
        try:
            receivers = await self.bus.publish_counted(
                self.channels.connection(connection_id), data
            )
            if receivers == 0:
                raise not_found(connection_id)
            owner = await self.presence.owner_of(connection_id)
            alive = None
            if owner is not None:
                alive = functools.partial(node.is_live, owner)
                self._owners[invocation_id] = owner
                if node.is_dead(owner):  # found dead while we looked it up
                    self._fail(invocation_id)
            return await results.wait(connection_id, future, timeout, node.timeout, alive)
        finally:
            results.discard(invocation_id)
            self._owners.pop(invocation_id, None)

    def _fail(self, invocation_id: str) -> None:
        self.results.complete(CompletionMessage.with_error(invocation_id, DISCONNECTED))

    def _node_dead(self, node_id: str) -> None:
        """A node died: the calls waiting for its clients fail as if they disconnected."""
        for invocation_id, owner in list(self._owners.items()):
            if owner == node_id:
                self._fail(invocation_id)

    def on_return(self, channel: bytes, data: bytes) -> None:
        """Completions for the calls this node made, from the nodes owning the clients."""
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
                self.results.complete(completion)

    def answer(
        self, connection: ClientConnection | None, invocation_id: str, return_channel: str
    ) -> None:
        """Route a client's answer to another node's call back to it (at once when gone).

        The caller still delivers the invocation to a live ``connection`` itself.
        """
        channel = self.node.prefix + return_channel.encode()
        if connection is None:
            self._return_completion(
                channel, "json", CompletionMessage.with_error(invocation_id, DISCONNECTED)
            )
            return

        expiry: list[asyncio.TimerHandle] = []

        def forward(completion: CompletionMessage, conn: ClientConnection = connection) -> None:
            for handle in expiry:
                handle.cancel()
            proto = conn.protocol
            self._return_completion(channel, proto.name if proto else "json", completion)

        connection.results[invocation_id] = forward
        timeout = self.timeout()
        limit = FORWARD_LIMIT if timeout is None else timeout + FORWARD_GRACE
        expiry.append(
            asyncio.get_running_loop().call_later(
                limit, self._expire, connection, invocation_id, forward, limit
            )
        )

    def _expire(
        self,
        connection: ClientConnection,
        invocation_id: str,
        forward: Callable[[CompletionMessage], None],
        waited: float,
    ) -> None:
        """A forwarded call the client never answered: forget it, tell the asking node."""
        if connection.results.get(invocation_id) is not forward:
            return  # answered, or failed when the connection ended
        del connection.results[invocation_id]
        error = (
            f"Connection '{connection.connection_id}' did not answer within {waited:g} seconds "
            "on the node holding it."
        )
        forward(CompletionMessage.with_error(invocation_id, error))

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
