"""The hub's control channel: aborts of connections and users wherever they are connected."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import wire

if TYPE_CHECKING:
    from ..lifetime.registry import ConnectionRegistry
    from .bus import RedisBus

logger = logging.getLogger("hubplane.redis")


class ControlChannel:
    """Aborts one hub's local connections, and tells the other nodes to abort theirs."""

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

    def on_message(self, channel: bytes, data: bytes) -> None:
        """Another node asks for an abort: abort what of it is ours."""
        try:
            kind, target = wire.read_control(data)
        except wire.WireError as exc:
            logger.warning("dropping a malformed control message from Redis: %s", exc)
            return
        registry = self.registry
        if kind == wire.CONTROL_ABORT_CONNECTION:
            connection = registry.connections.get(target)
            if connection is not None:
                connection.abort()
        elif kind == wire.CONTROL_ABORT_USER:
            for connection in list(registry.users.get(target, {}).values()):
                connection.abort()
