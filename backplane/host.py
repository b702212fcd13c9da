"""What a connection needs of its hub's handler, as a Protocol: the connection names no
handler, so the two stay out of each other's imports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .clients import ClientInterface, GroupManager
    from .dispatcher import HubDispatcher
    from .hub import Hub
    from .lifetime.base import HubLifetimeManager
    from .options import HubOptions, HubStats
    from .timers import CoarseClock


class ConnectionHost(Protocol):
    """What a connection needs of its hub's handler (``HubConnectionHandler``)."""

    hub_type: type[Hub[Any]]
    options: HubOptions
    stats: HubStats
    lifetime: HubLifetimeManager
    dispatcher: HubDispatcher
    group_manager: GroupManager
    client_interface: ClientInterface | None
    connections: dict[str, Any]  # id -> HubConnection
    clock: CoarseClock  # the time as of the last tick, plus one

    def add_connection(self, connection: Any) -> None:
        """Register a new connection (its timers run from the next tick)."""
        ...
