"""The lifetime manager interface: who is connected, groups, users, and fan-out."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, MutableMapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol.messages import CompletionMessage, HubMessage, InvocationMessage

if TYPE_CHECKING:
    from ..presence import Presence
    from ..protocol import HubProtocol
    from .usergroups import UserGroupStore

# Whom ``deliver`` and ``close_connections`` address (``name`` names the group, the user or
# the connection; it is ignored for ``TO_ALL``). The words are those of the Redis channels.
TO_ALL = "all"
TO_GROUP = "group"
TO_USER = "user"
TO_CONNECTION = "connection"

logger = logging.getLogger("hubplane.lifetime")


class SerializedMessage:
    """One hub message with its bytes cached per protocol, so N recipients cost one encode.

    A message from another node arrives as bytes only (``message`` is None); a protocol
    missing from those bytes is served by decoding one that is there and re-encoding.
    """

    __slots__ = ("message", "_cache", "_failed")

    def __init__(self, message: HubMessage | None, cache: dict[str, bytes] | None = None) -> None:
        self.message = message
        self._cache: dict[str, bytes] = cache if cache is not None else {}
        # Why a protocol could not encode it (made when one fails: it is logged once).
        self._failed: dict[str, str] | None = None

    def get(self, protocol: HubProtocol) -> bytes:
        """The framed bytes for ``protocol``, encoded at most once.

        Raises ValueError when they cannot be made; the first failure per protocol is logged
        (the message's kind and target, never its arguments), later recipients fail quietly.
        """
        data = self._cache.get(protocol.name)
        if data is None:
            failed = self._failed
            if failed is not None and protocol.name in failed:
                raise ValueError(failed[protocol.name])
            try:
                data = protocol.write_message(self.decoded())
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if failed is None:
                    failed = self._failed = {}
                failed[protocol.name] = reason
                logger.error(
                    "cannot encode %s for %s clients, who do not get it: %s",
                    _describe(self.message),
                    protocol.name,
                    reason,
                )
                raise ValueError(reason) from None
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


def _describe(message: HubMessage | None) -> str:
    """How a log line names a message: its kind and target, never its arguments."""
    if message is None:
        return "a message from another node"
    target = getattr(message, "target", None)
    kind = type(message).__name__
    return f"{kind} {target!r}" if isinstance(target, str) else kind


class ClientUser(Protocol):
    """What the lifetime layer reads of a connection's user: its id."""

    @property
    def id(self) -> str:
        """The user id that ``send_user`` and ``abort_user`` address."""
        ...


class ClientConnection(Protocol):
    """What the lifetime layer needs of one client connection (``backplane.connection`` has it).

    Exactly what the managers, the registry, client results and the Redis rooms use, and
    structural, so the lifetime layer sits below the hub model instead of naming its class.
    """

    @property
    def connection_id(self) -> str:
        """The id fan-out addresses the connection by."""
        ...

    @property
    def user(self) -> ClientUser | None:
        """The authenticated user, if any (``send_user`` reaches it)."""
        ...

    @property
    def protocol(self) -> HubProtocol | None:
        """The hub protocol chosen in the handshake (None before it)."""
        ...

    @property
    def closing(self) -> bool:
        """True once the connection is ending (it takes no more client results)."""
        ...

    @property
    def groups(self) -> AbstractSet[str]:
        """The groups the connection is in on this node."""
        ...

    @property
    def results(self) -> MutableMapping[str, Callable[[CompletionMessage], None]]:
        """Client results awaited from it: invocation id -> who gets the Completion."""
        ...

    def write_serialized(self, message: SerializedMessage) -> None:
        """Queue a message shared by many recipients (bytes encoded once per protocol)."""
        ...

    def write_message(self, message: HubMessage) -> None:
        """Queue a message for this connection only."""
        ...

    def abort(self) -> None:
        """End the connection from the server side."""
        ...

    def close(self, error: str | None = None, allow_reconnect: bool = False) -> None:
        """Send a Close message carrying ``error`` and end the connection."""
        ...

    def add_group(self, group: str) -> None:
        """Note that the connection joined ``group``."""
        ...

    def discard_group(self, group: str) -> None:
        """Note that the connection left ``group``."""
        ...

    def clear_groups(self) -> None:
        """Forget every group (the connection ended)."""
        ...


class HubLifetimeManager(ABC):
    """Tracks the connections of one hub and delivers messages to them.

    This is the only layer that knows whether there is one node or many.
    """

    #: Cluster-wide (or, in memory, node-wide) answers about who is connected.
    presence: Presence
    #: Seconds ``invoke()`` waits for a client result by default (``--client-result-timeout``).
    client_result_timeout: float | None = 30.0
    #: Groups one connection may be in on this node (``--max-groups-per-connection``); a
    #: join past it raises ``LimitExceededError``. None: no limit.
    max_groups_per_connection: int | None = None
    #: The groups users are in (their later connections join them too), or None.
    user_groups: UserGroupStore | None = None

    @abstractmethod
    async def on_connected(self, connection: ClientConnection) -> None:
        """Register a connection that completed its handshake."""

    @abstractmethod
    async def on_disconnected(self, connection: ClientConnection) -> None:
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
    async def invoke_connection(
        self, connection_id: str, method: str, args: list[Any], timeout: float | None
    ) -> Any:
        """Call ``method`` on one client and return its result (a client result)."""

    @abstractmethod
    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user wherever it is connected."""

    async def deliver(
        self,
        kind: str,
        name: str,
        message: SerializedMessage,
        exclude: Collection[str] | None = None,
    ) -> None:
        """Send a message whose bytes may be ready (per protocol) to ``kind``/``name``.

        ``exclude`` applies to ``TO_ALL`` and ``TO_GROUP``. The managers send the cached
        bytes as they are; this default decodes the message and uses the send methods.
        """
        decoded = message.decoded()
        if not isinstance(decoded, InvocationMessage):
            raise TypeError("only an invocation can be delivered")
        target, args = decoded.target, decoded.arguments
        if kind == TO_ALL:
            await self.send_all(target, args, exclude)
        elif kind == TO_GROUP:
            await self.send_group(name, target, args, exclude)
        elif kind == TO_USER:
            await self.send_user(name, target, args)
        elif kind == TO_CONNECTION:
            await self.send_connection(name, target, args)
        else:
            raise ValueError(f"unknown audience {kind!r}")

    async def close_connections(
        self,
        kind: str,
        name: str,
        reason: str | None = None,
        exclude: Collection[str] | None = None,
    ) -> None:
        """Close the connections ``kind``/``name`` addresses, wherever they are connected.

        Each gets a Close message carrying ``reason`` that does not allow a reconnect. This
        default aborts through presence and drops the reason; the managers override it.
        """
        if kind == TO_CONNECTION:
            ids = [name]
        elif kind == TO_USER:
            ids = await self.presence.user_connections(name)
        elif kind == TO_GROUP:
            ids = await self.presence.group_members(name)
        else:
            ids = await self.presence.connections()
        for cid in ids:
            if not exclude or cid not in exclude:
                await self.abort_connection(cid)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (connections to other nodes). Default: nothing."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop background work. Default: nothing."""


def write_many(
    targets: Mapping[str, ClientConnection],
    message: SerializedMessage,
    exclude: Collection[str] | None,
) -> None:
    """Write one message to every target except those in ``exclude``."""
    # Copy: a write may abort a slow connection, which removes it from the dict.
    if exclude:
        for cid, connection in list(targets.items()):
            if cid not in exclude:
                connection.write_serialized(message)
    else:
        for connection in list(targets.values()):
            connection.write_serialized(message)


def close_many(
    targets: Mapping[str, ClientConnection] | None,
    reason: str | None,
    exclude: Collection[str] | None,
) -> None:
    """Close every target except those in ``exclude``: a Close carrying ``reason`` (without
    one: an abort), allowing no reconnect."""
    for cid, connection in list(targets.items()) if targets else ():
        if exclude and cid in exclude:
            continue
        if reason is None:
            connection.abort()
        else:
            connection.close(reason, False)


# The error text a Completion carries when the client's connection ended first (as .NET's).
DISCONNECTED = "Connection disconnected."
