"""Client proxies (``self.clients.all.send(...)``), group managers and the hub context.

A typed hub, ``class ChatHub(Hub[ChatClient])`` with ``ChatClient`` a ``typing.Protocol`` of
async methods, gets proxies typed as ``ChatClient``: ``await self.clients.all.receive_message(
"ann", "hi")`` sends ``ReceiveMessage`` (PascalCase, as .NET clients name handlers), and mypy
rejects a method the protocol does not have. On a single client a method whose protocol
signature returns a value is a client result: ``n = await self.clients.caller.get_count()``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Collection, Iterable
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Generic, cast

from .hub import HUB_METHOD_ATTR, TClient
from .lifetime.base import HubLifetimeManager

if TYPE_CHECKING:
    from .hub import Hub

Sender = Callable[..., Awaitable[None]]


# --------------------------------------------------------------------------- typed clients


def pascal_case(name: str) -> str:
    """``receive_message`` -> ``ReceiveMessage``; ``receiveMessage`` -> ``ReceiveMessage``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


class ClientMethod:
    """A method of a typed hub's client interface."""

    __slots__ = ("wire_name", "returns_value")

    def __init__(self, wire_name: str, returns_value: bool) -> None:
        self.wire_name = wire_name
        self.returns_value = returns_value


ClientInterface = dict[str, ClientMethod]


def client_interface(protocol: type | None) -> ClientInterface | None:
    """The methods of a client protocol class, by Python name (None for untyped hubs)."""
    if protocol is None:
        return None
    methods: ClientInterface = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not inspect.isfunction(value):
                continue
            try:
                hints = typing.get_type_hints(value)
            except Exception:
                hints = dict(getattr(value, "__annotations__", {}))
            returns = hints.get("return", None)
            # Unresolved annotations stay strings: "None" means no value too.
            returns_value = returns not in (None, type(None), "None")
            wire = getattr(value, HUB_METHOD_ATTR, None) or pascal_case(attr)
            methods[attr] = ClientMethod(wire, returns_value)
    return methods


def hub_client_type(hub_type: type[Hub[Any]]) -> type | None:
    """The client protocol a hub class is parameterized with (``Hub[ChatClient]``), if any."""
    from .hub import Hub

    for klass in hub_type.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Hub):
                args = typing.get_args(base)
                if args and isinstance(args[0], type) and args[0] is not Any:
                    return args[0]
    return None


# --------------------------------------------------------------------------- proxies


class ClientProxy:
    """A set of clients to send to: ``await proxy.send("Method", *args)``."""

    __slots__ = ("_sender", "_targets", "_exclude", "_interface")

    def __init__(
        self,
        sender: Sender,
        *targets: Any,
        exclude: Collection[str] | None = None,
        interface: ClientInterface | None = None,
    ) -> None:
        self._sender = sender
        self._targets = targets
        self._exclude = exclude
        self._interface = interface

    async def send(self, method: str, *args: Any) -> None:
        """Send ``method(*args)`` to the clients; returns once the message is handed over."""
        if self._exclude is None:
            await self._sender(*self._targets, method, list(args))
        else:
            await self._sender(*self._targets, method, list(args), self._exclude)

    def _client_method(self, name: str) -> ClientMethod:
        interface = self._interface
        spec = interface.get(name) if interface is not None and not name.startswith("_") else None
        if spec is None:
            kind = "has no client interface" if interface is None else "is not in its interface"
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r} (the hub {kind}; "
                "use send(method, *args))"
            )
        return spec

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        wire = self._client_method(name).wire_name

        async def send(*args: Any) -> None:
            await self.send(wire, *args)

        return send


class SingleClientProxy(ClientProxy):
    """A proxy for exactly one connection, which can also ask it for a result."""

    __slots__ = ("_lifetime",)

    def __init__(
        self,
        lifetime: HubLifetimeManager,
        connection_id: str,
        interface: ClientInterface | None = None,
    ) -> None:
        super().__init__(lifetime.send_connection, connection_id, interface=interface)
        self._lifetime = lifetime

    async def invoke(
        self, method: str, *args: Any, timeout: float | None | EllipsisType = ...
    ) -> Any:
        """Call ``method(*args)`` on the client, wherever it is connected, and return its result.

        ``timeout`` is in seconds (None: wait for ever); by default ``--client-result-timeout``.
        Raises a ``ClientResultError``: ``ClientResultFailedError`` with the client's error
        (its handler threw, or it has none), ``ClientDisconnectedError`` when it or its node
        goes away, ``ClientResultTimeoutError``, or ``ClientNotFoundError``.
        """
        lifetime = self._lifetime
        wait = lifetime.client_result_timeout if isinstance(timeout, EllipsisType) else timeout
        return await lifetime.invoke_connection(self._targets[0], method, list(args), wait)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        spec = self._client_method(name)
        if not spec.returns_value:
            return super().__getattr__(name)
        wire = spec.wire_name

        async def invoke(*args: Any) -> Any:
            return await self.invoke(wire, *args)

        return invoke


class HubClients(Generic[TClient]):
    """The client proxies available everywhere (hubs, ``HubContext``, the emitter).

    Untyped hubs get :class:`ClientProxy` objects; typed hubs see them as their client
    protocol.
    """

    __slots__ = ("_lifetime", "_interface", "all")

    def __init__(
        self, lifetime: HubLifetimeManager, interface: ClientInterface | None = None
    ) -> None:
        self._lifetime = lifetime
        self._interface = interface
        self.all: TClient = self._proxy(lifetime.send_all)

    def _proxy(
        self, sender: Sender, *targets: Any, exclude: Collection[str] | None = None
    ) -> TClient:
        return cast(
            TClient, ClientProxy(sender, *targets, exclude=exclude, interface=self._interface)
        )

    def all_except(self, connection_ids: Iterable[str]) -> TClient:
        """Every connection except the listed ones."""
        return self._proxy(self._lifetime.send_all, exclude=frozenset(connection_ids))

    def client(self, connection_id: str) -> TClient:
        """One connection (a ``SingleClientProxy``: it can also ``invoke`` for a result)."""
        return cast(TClient, SingleClientProxy(self._lifetime, connection_id, self._interface))

    def clients(self, connection_ids: Iterable[str]) -> TClient:
        """Each of the listed connections."""
        return self._proxy(self._lifetime.send_connections, list(connection_ids))

    def group(self, name: str) -> TClient:
        """The members of a group."""
        return self._proxy(self._lifetime.send_group, name)

    def groups(self, names: Iterable[str]) -> TClient:
        """The members of each listed group."""
        return self._proxy(self._lifetime.send_groups, list(names))

    def group_except(self, name: str, connection_ids: Iterable[str]) -> TClient:
        """The members of a group except the listed connections."""
        return self._proxy(self._lifetime.send_group, name, exclude=frozenset(connection_ids))

    def user(self, user_id: str) -> TClient:
        """Every connection of a user."""
        return self._proxy(self._lifetime.send_user, user_id)

    def users(self, user_ids: Iterable[str]) -> TClient:
        """Every connection of each listed user."""
        return self._proxy(self._lifetime.send_users, list(user_ids))


class HubCallerClients(HubClients[TClient]):
    """The client proxies inside a hub method, which also know the caller."""

    __slots__ = ("_caller_id", "caller", "others")

    def __init__(
        self,
        lifetime: HubLifetimeManager,
        caller_id: str,
        interface: ClientInterface | None = None,
    ) -> None:
        super().__init__(lifetime, interface)
        self._caller_id = caller_id
        self.caller: TClient = cast(TClient, SingleClientProxy(lifetime, caller_id, interface))
        self.others: TClient = self._proxy(lifetime.send_all, exclude=frozenset((caller_id,)))

    def others_in_group(self, name: str) -> TClient:
        """The members of a group except the caller."""
        return self._proxy(self._lifetime.send_group, name, exclude=frozenset((self._caller_id,)))


class GroupManager:
    """Adds connections to groups and removes them (``self.groups``)."""

    __slots__ = ("_lifetime",)

    def __init__(self, lifetime: HubLifetimeManager) -> None:
        self._lifetime = lifetime

    async def add(self, connection_id: str, group: str) -> None:
        """Add a connection to a group."""
        await self._lifetime.add_to_group(connection_id, group)

    async def remove(self, connection_id: str, group: str) -> None:
        """Remove a connection from a group."""
        await self._lifetime.remove_from_group(connection_id, group)


class HubContext(Generic[TClient]):
    """Reach a hub's clients from code outside hub methods."""

    __slots__ = ("hub_type", "lifetime", "clients", "groups", "presence")

    def __init__(
        self,
        hub_type: type,
        lifetime: HubLifetimeManager,
        interface: ClientInterface | None = None,
    ) -> None:
        self.hub_type = hub_type
        self.lifetime = lifetime
        self.clients: HubClients[TClient] = HubClients(lifetime, interface)
        self.groups = GroupManager(lifetime)
        self.presence = lifetime.presence

    async def abort(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""
        await self.lifetime.abort_connection(connection_id)

    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user wherever it is connected."""
        await self.lifetime.abort_user(user_id)
