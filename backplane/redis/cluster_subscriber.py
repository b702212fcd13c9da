"""The subscriber of a node on a Redis Cluster: one subscribing connection per shard it needs.

With sharded pub/sub a channel lives on the master of its slot, and only there: each
channel is subscribed (``SSUBSCRIBE``) on a connection to that master, one connection per
master that holds at least one of the node's channels. Each connection is a
:class:`~.subscriber.Subscriber` of its own (its reconnects, PINGs, confirmations); this
class decides which channel goes where, and moves channels when the cluster changes:

- a connection lost (a master killed, a failover under way), or
- Redis saying a channel is not served there any more (``sunsubscribe`` pushed when its
  slot moves, or a ``MOVED`` refusing a SSUBSCRIBE)

make it read the slot map again, as often as needed (a failover takes a second or two),
until every channel is on a connection that works. The resubscribe hooks run after channels
moved, as after a reconnect: messages published meanwhile may be lost (the sequence
numbers find them). The map is also read every ``map_check_interval`` seconds: when the
masters changed (a failover of a master this node holds no channel on), the hooks run too,
since the failed master may have taken writes its replica never got.

With classic pub/sub on a cluster (``--redis-pubsub classic``) every channel is on one
connection, to the master of slot 0 (the one the writer publishes through, so a publish's
receiver count counts this node's subscription).

The node's outbox hears ``reader_up`` only while every connection in use is up: publishes are
kept, as through an outage of one Redis, while a shard is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .connect import NETWORK_ERRORS, backoff, close_connection
from .outbox import BusStats, Outbox
from .slots import Address, key_slot
from .subscriber import IDLE_CHANNEL, SUBSCRIBE_CONFIRM_TIMEOUT, Handler, Subscriber
from .topology import ClusterUnavailable, Topology

logger = logging.getLogger("hubplane.redis")

#: Seconds between two reads of the slot map while a connection is down.
REFRESH_INTERVAL = 0.25
#: Seconds between two reads of the slot map while all is well.
MAP_CHECK_INTERVAL = 2.0
#: ... and while the map read names a master that has just disowned a channel.
STALE_INTERVAL = 0.01
#: Seconds a master that disowned a channel is not given it back (its map's word against
#: the node that answered CLUSTER SLOTS; after this the map wins).
DISOWNED_WAIT = 2.0


class ShardState:
    """One shard connection's state; tells the cluster subscriber when it changes."""

    __slots__ = ("_up", "last_error", "_changed")

    def __init__(self, changed: Callable[[], None]) -> None:
        self._up = False
        self.last_error: str | None = None
        self._changed = changed

    @property
    def reader_up(self) -> bool:
        """True while the shard's connection is subscribed."""
        return self._up

    @reader_up.setter
    def reader_up(self, value: bool) -> None:
        if value != self._up:
            self._up = value
            self._changed()


class ClusterSubscriber:
    """The node's subscribing connections to a Redis Cluster, one per master in use."""

    def __init__(
        self, topology: Topology, outbox: Outbox, stats: BusStats, url: str, sharded: bool
    ) -> None:
        self.topology = topology
        self.outbox = outbox
        self.stats = stats
        self.url = url
        #: SSUBSCRIBE on each channel's shard (False: SUBSCRIBE, all on one master).
        self.sharded = sharded
        #: Set once the slot map has been read for the first time.
        self.ready = asyncio.Event()
        self.reply_timeout = 2.5
        self.confirm_timeout = SUBSCRIBE_CONFIRM_TIMEOUT
        self.ping_interval = 5.0
        #: Seconds between two reads of the slot map while nothing happens (a failover
        #: elsewhere in the cluster is found this way).
        self.map_check_interval = MAP_CHECK_INTERVAL
        self.links: dict[Address, Subscriber] = {}
        self._states: dict[Address, ShardState] = {}
        self._handlers: dict[bytes, Handler] = {}
        self._homes: dict[bytes, Address] = {}
        self._hooks: list[Callable[[], None]] = []
        self._kick = asyncio.Event()
        self._stale = False  # a shard disowned a channel: read the map even if all is up
        self._stale_event = asyncio.Event()  # set with _stale
        # channel -> (the master that disowned it, when): not placed there again at once
        self._disowned: dict[bytes, tuple[Address, float]] = {}
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def on_resubscribed(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` each time channels were subscribed again (a reconnect, a move)."""
        self._hooks.append(hook)

    # -- state ---------------------------------------------------------------------------------

    def _changed(self) -> None:
        up = self.ready.is_set() and all(s.reader_up for s in self._states.values())
        self.outbox.reader_up = up
        if not up:
            errors = [s.last_error for s in self._states.values() if s.last_error]
            if errors:
                self.outbox.last_error = errors[0]
            self._kick.set()

    def _address(self, channel: bytes) -> Address | None:
        slot_map = self.topology.map
        return slot_map.route(channel if self.sharded else None)

    def _link(self, address: Address) -> Subscriber:
        link = self.links.get(address)
        if link is None:
            state = self._states[address] = ShardState(self._changed)
            link = Subscriber(
                self.topology.client(address), state, self.stats, self._label(address), self.sharded
            )
            link.reply_timeout = self.reply_timeout
            link.confirm_timeout = self.confirm_timeout
            link.ping_interval = self.ping_interval
            link.idle_channel = self._idle_channel(address)
            link.on_lost = self._kick.set
            link.on_moved = self._moved
            link.on_resubscribed(self._resubscribed)
            self.links[address] = link
            link.start()
            self._changed()
        return link

    def _label(self, address: Address) -> str:
        return f"{self.url} ({address[0]}:{address[1]})"

    def _idle_channel(self, address: Address) -> bytes:
        """A channel of a slot of ``address`` (a sharded connection may only hold those)."""
        if not self.sharded:
            return IDLE_CHANNEL
        slots = set(self.topology.map.slots_of(address))
        for i in range(100_000):
            channel = IDLE_CHANNEL + b":" + str(i).encode()
            if key_slot(channel) in slots:
                return channel
        return IDLE_CHANNEL

    def _moved(self, channel: bytes) -> None:
        """A shard said a channel is not its own (any more): the map is stale. A channel it
        unsubscribed us from (``sunsubscribe``) has no home until the map names another."""
        address = self._homes.pop(channel, None) if channel else None
        if address is not None:
            link = self.links.get(address)
            if link is not None:
                link.forget(channel)
            self._disowned[channel] = (address, asyncio.get_running_loop().time())
        self._stale = True
        self._stale_event.set()
        self._kick.set()

    def _resubscribed(self) -> None:
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                logger.exception("a Redis resubscribe hook failed")

    # -- subscribing ---------------------------------------------------------------------------

    async def subscribe(self, channel: bytes, handler: Handler, confirm: bool = True) -> None:
        """Deliver messages on ``channel`` to ``handler(channel, data)`` (see
        :meth:`Subscriber.subscribe`); the channel goes to its shard's connection."""
        self._handlers[channel] = handler
        address = self._homes.get(channel) or self._address(channel)
        if address is None:
            self._moved(b"")  # no map yet, or the slot has no master: placed once there is
            return
        self._homes[channel] = address
        new = address not in self.links
        link = self._link(address)
        if new and confirm:
            # A new connection is not up yet: wait for it (bounded), so that the
            # subscription is confirmed before this returns.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.ready.wait(), self.reply_timeout)
        await link.subscribe(channel, handler, confirm)

    def unsubscribe(self, channel: bytes) -> None:
        """Stop receiving ``channel``."""
        self._handlers.pop(channel, None)
        address = self._homes.pop(channel, None)
        link = self.links.get(address) if address is not None else None
        if link is not None:
            link.unsubscribe(channel)

    # -- the task that keeps channels where the cluster serves them ------------------------------

    def start(self) -> None:
        """Start following the cluster (the shard connections start as channels come)."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="hubplane-redis-cluster-subscriber"
        )

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self.topology.refresh(self.reply_timeout)
            except (*NETWORK_ERRORS, ClusterUnavailable, TimeoutError) as exc:
                self.outbox.last_error = str(exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            break
        self.ready.set()
        self._changed()
        attempt = 0
        while not self._closing:
            if self._all_placed() and not self._stale:
                self._kick.clear()
                try:
                    await asyncio.wait_for(self._kick.wait(), self.map_check_interval)
                except TimeoutError:
                    await self._check_masters()
                    continue
                if not self._stale:
                    # A connection that fails tries its own address again at once: give the
                    # cluster a moment to say whether the master is really gone.
                    await asyncio.sleep(REFRESH_INTERVAL / 5)
                continue
            self._stale = False
            self._stale_event.clear()
            try:
                await self._place()
                attempt = 0
            except (*NETWORK_ERRORS, ClusterUnavailable, TimeoutError) as exc:
                logger.warning("reading the Redis Cluster's slot map failed: %s", exc)
                self._stale = True
                attempt += 1
            if attempt:
                await asyncio.sleep(backoff(attempt))
            elif self._stale:
                await asyncio.sleep(STALE_INTERVAL)  # a master's view lags (a reshard)
            else:
                # A connection still down (or still connecting): read the map again in a
                # while, or at once when a shard disowns a channel meanwhile.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stale_event.wait(), REFRESH_INTERVAL)

    async def _check_masters(self) -> None:
        """Read the slot map; when the masters changed (a failover of a master this node
        holds no channel on, say), place the channels again and run the resubscribe hooks:
        the failed master may have taken writes its replica never got, and the hooks write
        the node's state again."""
        before = set(self.topology.map.masters)
        try:
            masters = set((await self.topology.refresh(self.reply_timeout)).masters)
            if masters == before:
                return
            logger.warning("Redis Cluster: the masters changed (%s)", self.url)
            await self._place()
        except (*NETWORK_ERRORS, ClusterUnavailable, TimeoutError) as exc:
            logger.warning("reading the Redis Cluster's slot map failed: %s", exc)
            return
        self._resubscribed()

    def _all_placed(self) -> bool:
        """True when every channel has a connection and each is up (nothing to move)."""
        if len(self._homes) < len(self._handlers):
            return False  # subscribed before the map was known, or while a slot had no master
        return all(self._states[a].reader_up for a in set(self._homes.values()))

    async def _place(self) -> None:
        """Read the slot map and move every channel not on its master's connection."""
        # A master that disowned a channel knows where it went before the others hear of it.
        recent = max(self._disowned.values(), key=lambda d: d[1], default=None)
        await self.topology.refresh(self.reply_timeout, recent[0] if recent else None)
        now = asyncio.get_running_loop().time()
        moved = False
        for channel, handler in list(self._handlers.items()):
            target = self._address(channel)
            current = self._homes.get(channel)
            if target is None or target == current:
                continue
            disowned = self._disowned.get(channel)
            if disowned is not None:
                if disowned[0] == target and now - disowned[1] < DISOWNED_WAIT:
                    self._stale = True  # the map we read is older than the shard's word
                    continue
                del self._disowned[channel]
            if current is not None and current in self.links:
                self.links[current].unsubscribe(channel)
            self._homes[channel] = target
            await self._link(target).subscribe(channel, handler, confirm=False)
            self.stats.channel_moves += 1
            moved = True
        used = set(self._homes.values())
        for address in [a for a in self.links if a not in used]:
            await self._drop(address)
        if moved:
            logger.warning("Redis Cluster: channels moved to their new masters (%s)", self.url)
            self._resubscribed()
        self._changed()

    async def _drop(self, address: Address) -> None:
        link = self.links.pop(address)
        self._states.pop(address, None)
        link.cancel()
        await link.stopped()
        await close_connection(link.connection)

    # -- stopping ------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop following the cluster and every connection."""
        self._closing = True
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
        for link in self.links.values():
            link.cancel()

    async def stopped(self) -> None:
        """Wait for the tasks ended by :meth:`cancel`."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for link in self.links.values():
            await link.stopped()

    async def close(self) -> None:
        """Close every connection and client (after :meth:`stopped`)."""
        for link in self.links.values():
            await close_connection(link.connection)
        self.links.clear()
        self._states.clear()
        await self.topology.close()
