"""What the hub's Redis rooms and the node need of each other, as Protocols.

``node.py`` creates managers (``RedisNode.manager``), so it imports ``manager.py``; the
manager and its rooms (groups, results, control, presence) name the node only through
``ClusterNode`` here, which keeps the import graph one-way. ``RedisNode`` satisfies
``ClusterNode`` and ``RedisLifetimeManager`` satisfies ``NodeHub``, structurally.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from ..lifetime.base import ClientConnection
    from . import wire
    from .bus import RedisBus
    from .history import WatchedChannels
    from .keys import PresenceKeys
    from .sequence import PublishSequence, ReceiveSequence


class NodeHub(Protocol):
    """What a node reads of each hub's manager to write and rewrite its presence."""

    @property
    def channels(self) -> wire.Channels:
        """The hub's channel names (``channels.base`` names it in the node's entry)."""
        ...

    @property
    def keys(self) -> PresenceKeys:
        """The hub's presence keys."""
        ...

    @property
    def connections(self) -> Mapping[str, ClientConnection]:
        """The hub's connections on this node."""
        ...

    @property
    def started(self) -> bool:
        """True between the manager's start and stop."""
        ...


class DurableRecords(Protocol):
    """What a hub's manager tells the node's records of durable connections (``durable.py``)."""

    def changed(self, connection: ClientConnection) -> asyncio.Future[None] | None:
        """The connection's groups changed: done once recorded (None: nothing to wait for)."""
        ...

    def forget(self, connection: ClientConnection) -> None:
        """The connection ended here or moved away."""
        ...


class ClusterNode(Protocol):
    """What a hub's manager and its rooms need of their node (``node.RedisNode``)."""

    @property
    def bus(self) -> RedisBus:
        """The node's two Redis connections."""
        ...

    @property
    def node_id(self) -> str:
        """This node's name in the cluster."""
        ...

    @property
    def prefix(self) -> bytes:
        """The channel prefix of every channel and key."""
        ...

    @property
    def cluster(self) -> bool:
        """True on a Redis Cluster: keys in the cluster layout (``keys.py``)."""
        ...

    @property
    def payload_protocols(self) -> Sequence[str]:
        """The protocols serialized into each published message (empty: all of the hub's)."""
        ...

    @property
    def timeout(self) -> float:
        """Seconds without a heartbeat after which a node counts as dead."""
        ...

    @property
    def managers(self) -> Sequence[NodeHub]:
        """Every hub's manager on this node."""
        ...

    @property
    def published(self) -> PublishSequence:
        """The numbers this node stamps on what it publishes."""
        ...

    @property
    def received(self) -> ReceiveSequence:
        """Duplicate and gap checks on what this node hears."""
        ...

    @property
    def history(self) -> WatchedChannels:
        """The watched channels, where publishing keeps history."""
        ...

    @property
    def durable(self) -> DurableRecords | None:
        """The records of durable connections (``--durable-resume``), or None."""
        ...

    async def start(self) -> None:
        """Connect and start heartbeating (idempotent)."""
        ...

    async def stop(self) -> None:
        """Remove this node's presence and close the bus."""
        ...

    async def is_live(self, node_id: str) -> bool:
        """True when ``node_id`` heartbeated within the timeout."""
        ...

    async def live_nodes(self) -> dict[str, float]:
        """Node id -> last heartbeat of every live node."""
        ...

    def on_node_dead(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(node_id)`` whenever this node learns that a node died."""
        ...

    def is_dead(self, node_id: str) -> bool:
        """True when ``node_id`` was found dead lately (and not seen alive since)."""
        ...

    def node_key_of(self, node_id: str) -> bytes:
        """The HASH describing a node."""
        ...

    def connection_added(self, manager: NodeHub, connection: ClientConnection) -> None:
        """Record a new local connection in presence."""
        ...

    def connection_removed(
        self,
        manager: NodeHub,
        connection_id: str,
        user: str | None = None,
        groups: Collection[str] = (),
    ) -> None:
        """Forget a local connection of ``user`` (and its ``groups``) in presence."""
        ...

    def group_added(self, manager: NodeHub, connection_id: str, group: str) -> None:
        """Record a local connection joining a group."""
        ...

    def group_removed(self, manager: NodeHub, connection_id: str, group: str) -> None:
        """Record a local connection leaving a group."""
        ...
