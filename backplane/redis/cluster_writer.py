"""The writer of a node on a Redis Cluster: the outbox drained into one connection per master.

The queue and its policy are the single-Redis writer's (``outbox.py``, ``writer.py``): this
class only changes where a batch goes. Each command goes to the master of its key's slot
(``slots.routing_key``); a publish, with sharded pub/sub, becomes ``SPUBLISH`` to the master
of its channel's slot, else a classic ``PUBLISH`` (which the cluster relays to every node)
to the master of slot 0, where the nodes' classic subscriptions are: a PUBLISH counts the
receivers of the Redis node that runs it, and a client result needs that count. One batch
is written to every master it touches before any reply is read, so a batch still costs one
round trip.

A ``MOVED`` reply updates the slot map and the command goes again to the new owner (for a
publish, after ``moved_pause``: the subscribers are moving too); ``ASK``
sends it once to the importing node (after ``ASKING``); ``CLUSTERDOWN`` / ``TRYAGAIN`` (a
failover under way) are retried a few times, briefly. Redis ran none of these, so nothing
goes twice. A master that fails (its connection lost, no reply in time) is an outage for the
whole writer, as one Redis would be: the batch goes back to the queue, the map is read
again and every master is connected again (``writer.py``'s loop, with its backoff), and
meanwhile publishes are kept. The publishes the failed master took in its last
``replay_window`` seconds go again too, first (those on watched channels, history included):
a killed master may have acknowledged a publish and died before writing it to its
subscribers, or to its replica (receivers drop the duplicates, and so does a revival).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from .connect import close_connection, open_connection, read_reply
from .outbox import PUBLISH, BusStats, Command, Outbox
from .slots import Address, is_retryable, redirection, routing_key
from .topology import ClusterUnavailable, Topology
from .writer import Writer

logger = logging.getLogger("hubplane.redis")

_pack = hiredis.pack_command
#: Rounds of redirections and retries a batch may take before the writer gives up on it.
MAX_ROUNDS = 6
#: Seconds of publishes a master acknowledged that go again when it fails: a master killed
#: may have acknowledged a publish without having written it to its subscribers yet.
REPLAY_WINDOW = 0.5
#: Seconds the writer waits, when a channel's slot has moved (MOVED), before it publishes at
#: the new master: the subscribers follow the move (they hear of it at the same moment) and
#: take a few milliseconds to subscribe there.
MOVED_PAUSE = 0.05


class ClusterWriter(Writer):
    """The node's writing connections to the masters of a Redis Cluster."""

    task_name = "hubplane-redis-cluster-writer"

    def __init__(
        self,
        topology: Topology,
        outbox: Outbox,
        wake: asyncio.Event,
        stats: BusStats,
        url: str,
        sharded: bool,
    ) -> None:
        # The first seed's client lends its reply callbacks (HGETALL to a dict, ...).
        super().__init__(topology.client(topology.seeds[0]), outbox, wake, stats, url)
        self.topology = topology
        #: SPUBLISH (sharded pub/sub) instead of PUBLISH.
        self.sharded = sharded
        self.connections: dict[Address, AbstractConnection] = {}
        #: Commands sent again after a CLUSTERDOWN or TRYAGAIN (after a MOVED or ASK:
        #: ``stats.redirections``).
        self.retries = 0
        #: Seconds the writer waits before it publishes on a channel whose slot just moved.
        self.moved_pause = MOVED_PAUSE
        #: Seconds of publishes a master took that go again if its connection fails.
        self.replay_window = REPLAY_WINDOW
        self._recent: dict[Address, deque[tuple[float, tuple[Any, ...]]]] = {}
        self._replay: list[tuple[Any, ...]] = []
        self._current: Address | None = None  # the master being written to or read from

    # -- connections ---------------------------------------------------------------------------

    async def _close_connections(self) -> None:
        connections = list(self.connections.values())
        self.connections.clear()
        for connection in connections:
            await close_connection(connection)

    async def _open(self) -> None:
        timeout = self.reply_timeout
        try:
            async with asyncio.timeout(timeout):
                slot_map = await self.topology.refresh(timeout)
                for address in slot_map.masters:
                    await self._connection(address)
        except BaseException as exc:
            await self._close_connections()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"Redis Cluster did not answer within {timeout:g} s") from None
            raise
        if self._replay:
            # Before the batch that failed (put back at the front): each channel's messages
            # stay in order, and the receivers drop what they had (sequence numbers).
            replay, self._replay = self._replay, []
            self.stats.replayed += len(replay)
            self.outbox.requeue([Command(PUBLISH, args, None) for args in replay])

    async def _connection(self, address: Address) -> AbstractConnection:
        """The connection to the master at ``address``, opened (scripts loaded) if new."""
        connection = self.connections.get(address)
        if connection is None:
            connection = await open_connection(self.topology.client(address), self.reply_timeout)
            try:
                await self._load_scripts(connection, ping=True)
            except BaseException:
                await close_connection(connection)
                raise
            self.connections[address] = connection
        return connection

    async def _reload_scripts(self) -> None:
        for connection in list(self.connections.values()):
            await self._load_scripts(connection)

    async def close(self) -> None:
        """Close every connection and client (after :meth:`stopped`)."""
        await self._close_connections()
        await self.topology.close()

    # -- sending -------------------------------------------------------------------------------

    def _route(self, command: tuple[Any, ...]) -> tuple[bytes | str | None, tuple[Any, ...]]:
        """The key a command routes by, and the command as sent (PUBLISH made SPUBLISH)."""
        if command[0] == "PUBLISH":
            if self.sharded:
                return command[1], ("SPUBLISH", *command[1:])
            # Classic: the master of slot 0, where every node's subscriber is too (a
            # PUBLISH counts the receivers of the Redis node that runs it, and only those).
            return None, command
        return routing_key(command), command

    def _remember(self, address: Address, now: float, command: tuple[Any, ...]) -> None:
        """Keep a publish ``address`` took, for ``replay_window`` seconds."""
        recent = self._recent.get(address)
        if recent is None:
            recent = self._recent[address] = deque()
        recent.append((now, command))
        cutoff = now - self.replay_window
        while recent[0][0] < cutoff:
            recent.popleft()

    def _lost(self, address: Address | None) -> None:
        """The connection to ``address`` failed: what it took lately goes again."""
        if address is None:
            return
        recent = self._recent.pop(address, None)
        if recent:
            cutoff = asyncio.get_running_loop().time() - self.replay_window
            self._replay.extend(c for t, c in recent if t >= cutoff)

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        try:
            return await self._exchange_routed(commands)
        except BaseException:
            self._lost(self._current)
            self._current = None
            raise

    async def _exchange_routed(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        remember = self._remember
        history_sha = self.outbox.history_sha  # a publish on a watched channel
        now = asyncio.get_running_loop().time()
        routed = [self._route(c) for c in commands]
        results: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        asking: dict[int, Address] = {}
        slot_map = self.topology.map
        for round_ in range(MAX_ROUNDS):
            per: dict[Address, list[int]] = {}
            for i in pending:
                address = asking.get(i) or slot_map.route(routed[i][0])
                if address is None:
                    raise ClusterUnavailable("a hash slot has no master (a failover under way?)")
                per.setdefault(address, []).append(i)
            asked = asking
            asking = {}
            for address, indexes in per.items():
                self._current = address
                connection = await self._connection(address)
                parts = []
                for i in indexes:
                    if i in asked:
                        parts.append(_pack(("ASKING",)))
                    parts.append(_pack(routed[i][1]))
                await connection.send_packed_command(b"".join(parts), check_health=False)
            retry: list[int] = []
            wait = False
            channel_moved = False
            for address, indexes in per.items():
                self._current = address
                connection = self.connections[address]
                for i in indexes:
                    if i in asked:
                        await read_reply(connection)  # ASKING's OK
                    reply = await read_reply(connection)
                    if isinstance(reply, ResponseError):
                        moved = redirection(reply)
                        if moved is not None:
                            kind, slot, where = moved
                            if kind == "MOVED":
                                slot_map.moved(slot, where)
                                channel_moved |= routed[i][1][0] == "SPUBLISH"
                            else:
                                asking[i] = where
                            self.stats.redirections += 1
                            retry.append(i)
                            continue
                        if is_retryable(reply):
                            self.retries += 1
                            retry.append(i)
                            wait = True
                            continue
                    results[i] = reply
                    command = commands[i]
                    if command[0] == "PUBLISH" or (
                        command[0] == "EVALSHA" and command[1] == history_sha
                    ):
                        remember(address, now, command)
            self._current = None
            if not retry:
                return results
            pending = retry
            if channel_moved:
                # The old master unsubscribed the channel's subscribers as it gave the slot
                # away; they subscribe at the new one a moment later. Published there before
                # that, a message would reach nobody.
                await asyncio.sleep(self.moved_pause)
            if wait:
                # A failover or a migration under way: wait a little, and read the map
                # again (a master demoted to replica answers READONLY, not MOVED).
                await asyncio.sleep(0.02 * 2**round_)
                slot_map = await self.topology.refresh(self.reply_timeout)
        raise ClusterUnavailable(
            f"Redis Cluster kept redirecting or refusing {len(pending)} commands"
        )
