"""Client proxies (``self.clients.all.send(...)``), group managers and the hub context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from types import EllipsisType
from typing import Any

from .lifetime.base import HubLifetimeManager

Sender = Callable[..., Awaitable[None]]


class ClientProxy:
    """A set of clients to send to: ``await proxy.send("Method", *args)``."""

    __slots__ = ("_sender", "_targets", "_exclude")

    def __init__(
        self, sender: Sender, *targets: Any, exclude: Collection[str] | None = None
    ) -> None:
        self._sender = sender
        self._targets = targets
        self._exclude = exclude

    async def send(self, method: str, *args: Any) -> None:
        """Send ``method(*args)`` to the clients; returns once the message is handed over."""
        if self._exclude is None:
            await self._sender(*self._targets, method, list(args))
        else:
            await self._sender(*self._targets, method, list(args), self._exclude)


class SingleClientProxy(ClientProxy):
    """A proxy for exactly one connection, which can also ask it for a result."""

    __slots__ = ("_lifetime",)

    def __init__(self, lifetime: HubLifetimeManager, connection_id: str) -> None:
        super().__init__(lifetime.send_connection, connection_id)
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


class HubClients:
    """The client proxies available everywhere (hubs, ``HubContext``, the emitter)."""

    __slots__ = ("_lifetime", "all")

    def __init__(self, lifetime: HubLifetimeManager) -> None:
        self._lifetime = lifetime
        self.all: ClientProxy = ClientProxy(lifetime.send_all)

    def all_except(self, connection_ids: Iterable[str]) -> ClientProxy:
        """Every connection except the listed ones."""
        return ClientProxy(self._lifetime.send_all, exclude=frozenset(connection_ids))

    def client(self, connection_id: str) -> SingleClientProxy:
        """One connection."""
        return SingleClientProxy(self._lifetime, connection_id)

    def clients(self, connection_ids: Iterable[str]) -> ClientProxy:
        """Each of the listed connections."""
        return ClientProxy(self._lifetime.send_connections, list(connection_ids))

    def group(self, name: str) -> ClientProxy:
        """The members of a group."""
        return ClientProxy(self._lifetime.send_group, name)

    def groups(self, names: Iterable[str]) -> ClientProxy:
        """The members of each listed group."""
        return ClientProxy(self._lifetime.send_groups, list(names))

    def group_except(self, name: str, connection_ids: Iterable[str]) -> ClientProxy:
        """The members of a group except the listed connections."""
        return ClientProxy(self._lifetime.send_group, name, exclude=frozenset(connection_ids))

    def user(self, user_id: str) -> ClientProxy:
        """Every connection of a user."""
        return ClientProxy(self._lifetime.send_user, user_id)

    def users(self, user_ids: Iterable[str]) -> ClientProxy:
        """Every connection of each listed user."""
        return ClientProxy(self._lifetime.send_users, list(user_ids))


class HubCallerClients(HubClients):
    """The client proxies inside a hub method, which also know the caller."""

    __slots__ = ("_caller_id", "caller", "others")

    def __init__(self, lifetime: HubLifetimeManager, caller_id: str) -> None:
        super().__init__(lifetime)
        self._caller_id = caller_id
        self.caller: SingleClientProxy = SingleClientProxy(lifetime, caller_id)
        self.others: ClientProxy = ClientProxy(lifetime.send_all, exclude=frozenset((caller_id,)))

    def others_in_group(self, name: str) -> ClientProxy:
        """The members of a group except the caller."""
        return ClientProxy(self._lifetime.send_group, name, exclude=frozenset((self._caller_id,)))


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


class HubContext:
    """Reach a hub's clients from code outside hub methods."""

    __slots__ = ("hub_type", "lifetime", "clients", "groups", "presence")

    def __init__(self, hub_type: type, lifetime: HubLifetimeManager) -> None:
        self.hub_type = hub_type
        self.lifetime = lifetime
        self.clients = HubClients(lifetime)
        self.groups = GroupManager(lifetime)
        self.presence = lifetime.presence

    async def abort(self, connection_id: str) -> None:
        """Disconnect a connection wherever it is connected."""
        await self.lifetime.abort_connection(connection_id)

    async def abort_user(self, user_id: str) -> None:
        """Disconnect every connection of a user wherever it is connected."""
        await self.lifetime.abort_user(user_id)
