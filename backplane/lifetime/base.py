"""The lifetime manager interface: who is connected, groups, users, and fan-out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ..protocol.messages import HubMessage

if TYPE_CHECKING:
    from ..connection import HubConnection
    from ..presence import Presence
    from ..protocol import HubProtocol


class SerializedMessage:
    """One hub message with its bytes cached per protocol, so N recipients cost one encode.

    A message from another node arrives as bytes only (``message`` is None); a protocol
    missing from those bytes is served by decoding one that is there and re-encoding.
    """

    __slots__ = ("message", "_cache")

    def __init__(self, message: HubMessage | None, cache: dict[str, bytes] | None = None) -> None:
        self.message = message
        self._cache: dict[str, bytes] = cache if cache is not None else {}

    def get(self, protocol: HubProtocol) -> bytes:
        """The framed bytes for ``protocol``, encoded at most once."""
        data = self._cache.get(protocol.name)
        if data is None:
            data = protocol.write_message(self.decoded())
            self._cache[protocol.name] = data
        return data

    def decoded(self) -> HubMessage:
        """The message object (decoded from cached bytes when it came from elsewhere)."""
        if self.message is None:
            from ..protocol import get_protocol

            for name, data in self._cache.items():
                source = get_protocol(name)
                if source is None:
                    continue
                messages, _ = source.parse_messages(data)
                if messages:
                    self.message = messages[0]
                    break
            else:
                raise ValueError(
                    "This message was received from another server that did not have the "
                    "requested protocol available."
                )
        return self.message


class HubLifetimeManager(ABC):
    """Tracks the connections of one hub and delivers messages to them.

    This is the only layer that knows whether there is one node or many.
    """

    #: Cluster-wide (or, in memory, node-wide) answers about who is connected.
    presence: Presence

    @abstractmethod
    async def on_connected(self, connection: HubConnection) -> None:
        """Register a connection that completed its handshake."""

    @abstractmethod
    async def on_disconnected(self, connection: HubConnection) -> None:
        """Forget a connection, its groups and its user membership."""

    @abstractmethod
    async def send_all(
        self, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        """Send to every connection except those in ``exclude``."""

    @abstractmethod
    async def send_connection(self, connection_id: str, method: str, args: list[Any]) -> None:
        """Send to one connection."""

    @abstractmethod
    async def send_connections(
        self, connection_ids: Collection[str], method: str, args: list[Any]
    ) -> None:
        """Send to each listed connection."""

    @abstractmethod
    async def send_group(
        self, group: str, method: str, args: list[Any], exclude: Collection[str] | None = None
    ) -> None:
        """Send to the members of ``group`` except those in ``exclude``."""

    @abstractmethod
    async def send_groups(self, groups: Collection[str], method: str, args: list[Any]) -> None:
        """Send to the members of each listed group."""

    @abstractmethod
    async def send_user(self, user_id: str, method: str, args: list[Any]) -> None:
        """Send to every connection of a user."""

    @abstractmethod
    async def send_users(self, user_ids: Collection[str], method: str, args: list[Any]) -> None:
        """Send to every connection of each listed user."""

    @abstractmethod
    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add a connection to a group."""

    @abstractmethod
    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Remove a connection from a group."""

    @abstractmethod
    async def abort_connection(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""

    @abstractmethod
    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user wherever it is connected."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (connections to other nodes). Default: nothing."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop background work. Default: nothing."""
