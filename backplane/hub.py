"""The hub programming model: ``Hub``, the caller context, users and ``hub_method``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from typing_extensions import TypeVar as TypeVarWithDefault

from .protocol import HubProtocol
from .user import User as User  # re-exported: backplane.hub.User

if TYPE_CHECKING:
    from .clients import GroupManager, HubCallerClients
    from .filters import FilterSpec
    from .presence import Presence

F = TypeVar("F", bound=Callable[..., Any])
# The client interface of a typed hub; plain ``class ChatHub(Hub)`` means ``Hub[Any]``.
TClient = TypeVarWithDefault("TClient", default=Any)

HUB_METHOD_ATTR = "__hubplane_method_name__"


def hub_method(name: str) -> Callable[[F], F]:
    """Expose the decorated method to clients under ``name`` instead of its Python name."""

    def decorate(fn: F) -> F:
        setattr(fn, HUB_METHOD_ATTR, name)
        return fn

    return decorate


class _Lifetime(Protocol):
    @property
    def presence(self) -> Presence: ...


class _Handler(Protocol):
    @property
    def group_manager(self) -> GroupManager: ...

    @property
    def lifetime(self) -> _Lifetime: ...


class ServedConnection(Protocol):
    """What hubs and their context read of the connection they serve (``HubConnection``)."""

    @property
    def connection_id(self) -> str: ...

    @property
    def user(self) -> User | None: ...

    @property
    def transport(self) -> str: ...

    @property
    def protocol(self) -> HubProtocol | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query(self) -> Mapping[str, str]: ...

    @property
    def items(self) -> dict[Any, Any]: ...

    @property
    def handler(self) -> _Handler: ...

    @property
    def caller_context(self) -> HubCallerContext: ...

    @property
    def caller_clients(self) -> HubCallerClients[Any]: ...

    def abort(self, allow_reconnect: bool = False) -> None: ...


class HubCallerContext:
    """What a hub method knows about the connection that called it (``self.context``)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: ServedConnection) -> None:
        self._connection = connection

    @property
    def connection_id(self) -> str:
        """The public id of the calling connection."""
        return self._connection.connection_id

    @property
    def user_identifier(self) -> str | None:
        """The id of the authenticated user, or None when anonymous."""
        user = self._connection.user
        return user.id if user is not None else None

    @property
    def user(self) -> User | None:
        """The authenticated user, or None."""
        return self._connection.user

    @property
    def items(self) -> dict[Any, Any]:
        """Per-connection state that lives as long as the connection."""
        return self._connection.items

    @property
    def transport(self) -> str:
        """The transport name: ``WebSockets``, ``ServerSentEvents`` or ``LongPolling``."""
        return self._connection.transport

    @property
    def protocol(self) -> str | None:
        """The hub protocol name (``json`` or ``messagepack``)."""
        proto = self._connection.protocol
        return proto.name if proto is not None else None

    @property
    def headers(self) -> Mapping[str, str]:
        """The HTTP headers of the request that opened the transport (lower-case names)."""
        return self._connection.headers

    @property
    def query(self) -> Mapping[str, str]:
        """The query parameters of the request that opened the transport."""
        return self._connection.query

    def abort(self, allow_reconnect: bool = False) -> None:
        """Close the connection; the client may reconnect only when ``allow_reconnect``."""
        self._connection.abort(allow_reconnect=allow_reconnect)


class Hub(Generic[TClient]):
    """Base class of hubs. A new instance serves every invocation."""

    # The connection an instance serves, set before a method runs; the attributes below
    # are read from it when used (most calls touch one or two of them).
    _hubplane_connection: ServedConnection

    @property
    def context(self) -> HubCallerContext:
        """The calling connection: its id, user, items, transport, query."""
        return self._hubplane_connection.caller_context

    @property
    def clients(self) -> HubCallerClients[TClient]:
        """Proxies to send to clients: ``all``, ``caller``, ``others``, ``group(...)``..."""
        return self._hubplane_connection.caller_clients

    @property
    def groups(self) -> GroupManager:
        """Adds connections to groups and removes them."""
        return self._hubplane_connection.handler.group_manager

    @property
    def presence(self) -> Presence:
        """Who is connected to this hub, across the cluster."""
        return self._hubplane_connection.handler.lifetime.presence

    # The name this hub has on the backplane; defaults to module.qualname.
    wire_name: ClassVar[str | None] = None

    # Filters of this hub only (instances or classes), after the global ones.
    filters: ClassVar[Sequence[FilterSpec]] = ()

    async def on_connected(self) -> None:
        """Called when a client has connected (after the handshake)."""

    async def on_disconnected(self, exception: Exception | None) -> None:
        """Called once when a client's connection has ended, with the error if any."""


def hub_wire_name(hub_type: type[Hub[Any]]) -> str:
    """The backplane name of a hub class."""
    name = hub_type.__dict__.get("wire_name")
    if isinstance(name, str) and name:
        return name
    return f"{hub_type.__module__}.{hub_type.__qualname__}"
