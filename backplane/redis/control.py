"""The hub's control channel: closes of connections, users, groups and the whole hub,
wherever the connections are."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from ..lifetime.base import TO_ALL, TO_CONNECTION, TO_GROUP, TO_USER, close_many
from . import wire

if TYPE_CHECKING:
    from ..lifetime.registry import ConnectionRegistry
    from .bus import RedisBus

logger = logging.getLogger("hubplane.redis")

# The control kind of each audience, and back.
_KINDS = {
    TO_CONNECTION: wire.CONTROL_ABORT_CONNECTION,
    TO_USER: wire.CONTROL_ABORT_USER,
    TO_GROUP: wire.CONTROL_CLOSE_GROUP,
    TO_ALL: wire.CONTROL_CLOSE_ALL,
}
_AUDIENCES = {kind: audience for audience, kind in _KINDS.items()}


class ControlChannel:
    """Closes one hub's local connections, and tells the other nodes to close theirs."""

    def __init__(self, bus: RedisBus, channels: wire.Channels, registry: ConnectionRegistry):
        self.bus = bus
        self.channels = channels
        self.registry = registry

    def abort_connection(self, connection_id: str) -> None:
        """Abort a local connection, or ask every node to abort it."""
        connection = self.registry.connections.get(connection_id)
        if connection is not None:
            connection.abort()
            return
        self.bus.publish(
            self.channels.control, wire.write_control(wire.CONTROL_ABORT_CONNECTION, connection_id)
        )

    def abort_user(self, user_id: str) -> None:
        """Abort a user's local connections and ask every node to abort theirs."""
        for connection in list(self.registry.users.get(user_id, {}).values()):
            connection.abort()
        self.bus.publish(
            self.channels.control, wire.write_control(wire.CONTROL_ABORT_USER, user_id)
        )

    def close(
        self, audience: str, name: str, reason: str | None, exclude: Collection[str] | None
    ) -> None:
        """Close the addressed connections here, with a Close carrying ``reason`` that allows
        no reconnect, and ask every other node to close theirs (a local connection is not
        announced: it is nowhere else)."""
        local = audience == TO_CONNECTION and name in self.registry.connections
        self._close_local(audience, name, reason, exclude)
        if local:
            return
        message = wire.ControlClose(_KINDS[audience], name, reason, tuple(exclude or ()))
        self.bus.publish(self.channels.control, wire.write_control_close(message))

    def _close_local(
        self, audience: str, name: str, reason: str | None, exclude: Collection[str] | None
    ) -> None:
        close_many(self.registry.audience(audience, name), reason, exclude)

    def on_message(self, channel: bytes, data: bytes) -> None:
        """Another node asks for a close: close what of it is ours."""
        try:
            message = wire.read_control_close(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed control message from Redis: %s", exc)
            return
        audience = _AUDIENCES.get(message.kind)
        if audience is None:
            return  # a kind of a newer node
        self._close_local(audience, message.target, message.reason, message.excluded)
