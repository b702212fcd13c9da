"""The writer of a node on a Redis Cluster: the outbox drained into one connection per master.

The queue and its policy are the single-Redis writer's (``outbox.py``, ``writer.py``): this
class only changes where a batch goes. Each command goes to the master of its key's slot
(``slots.routing_key``); a publish, with sharded pub/sub, becomes ``SPUBLISH`` to the master
of its channel's slot, else a classic ``PUBLISH`` (which the cluster relays to every node),
sent by the same routing to spread the load. One batch is written to every master it
touches before any reply is read, so a batch still costs one round trip.

A ``MOVED`` reply updates the slot map and the command goes again to the new owner; ``ASK``
sends it once to the importing node (after ``ASKING``); ``CLUSTERDOWN`` / ``TRYAGAIN`` (a
failover under way) are retried a few times, briefly. Redis ran none of these, so nothing
goes twice. A master that fails (its connection lost, no reply in time) is an outage for the
whole writer, as one Redis would be: the batch goes back to the queue, the map is read
again and every master is connected again (``writer.py``'s loop, with its backoff), and
meanwhile publishes are kept.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from .connect import close_connection, open_connection, read_reply
from .outbox import BusStats, Outbox
from .slots import Address, is_retryable, redirection, routing_key
from .topology import ClusterUnavailable, Topology
from .writer import Writer

logger = logging.getLogger("hubplane.redis")

_pack = hiredis.pack_command
#: Rounds of redirections and retries a batch may take before the writer gives up on it.
MAX_ROUNDS = 6


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
        #: Commands sent again after a MOVED or ASK, and after a CLUSTERDOWN or TRYAGAIN.
        self.redirections = 0
        self.retries = 0

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
            return command[1], command
        return routing_key(command), command

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
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
                connection = await self._connection(address)
                parts = []
                for i in indexes:
                    if i in asked:
                        parts.append(_pack(("ASKING",)))
                    parts.append(_pack(routed[i][1]))
                await connection.send_packed_command(b"".join(parts), check_health=False)
            retry: list[int] = []
            wait = False
            for address, indexes in per.items():
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
                            else:
                                asking[i] = where
                            self.redirections += 1
                            retry.append(i)
                            continue
                        if is_retryable(reply):
                            self.retries += 1
                            retry.append(i)
                            wait = True
                            continue
                    results[i] = reply
            if not retry:
                return results
            pending = retry
            if wait:
                await asyncio.sleep(0.02 * 2**round_)
        raise ClusterUnavailable(
            f"Redis Cluster kept redirecting or refusing {len(pending)} commands"
        )
