"""In-process nodes with ``--durable-resume`` and a client that counts what it saw.

Each node is a RedisNode with one hub and the server's handover (``server/handover.py``) on
the session's Redis, under the cluster's private prefix. ``crash`` stops a node as SIGKILL
would: its tasks stop and its Redis connections close with whatever was queued unsent, no
clean leave, nothing exported. ``Client`` reads what a stateful client would read from a
connection (the bytes its outbound buffer lets go), numbers what stateful reconnect numbers,
drops numbers it has seen and checks a ``Sequence`` never skips ahead, as the JS client does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from backplane import HubConnection, HubConnectionHandler
from backplane.protocol import JSON_PROTOCOL, InvocationMessage, SequenceMessage
from backplane.redis.node import RedisNode
from backplane.stateful import TRACKED
from server.handover import Handover
from server.registry import ConnectionRecord, ConnectionRegistry
from server.tasks import BackgroundTasks
from tests.lifetime.cluster import Cluster

RS = b"\x1e"
PATH = "/hubs/durable"


class Node:
    """One in-process node: hub handler, Redis node, handover, registry."""

    def __init__(self, handler: HubConnectionHandler, node: RedisNode, handover: Handover) -> None:
        self.handler = handler
        self.node = node
        self.handover = handover
        self.registry = handover.registry
        self.tasks = handover.tasks

    @property
    def history(self) -> dict[bytes, tuple[float, int]]:
        """The watched channels this node knows of."""
        return self.node.history.channels

    async def connect(self) -> tuple[ConnectionRecord, HubConnection]:
        """A stateful WebSocket connection (json), remembered and recorded, past its handshake."""
        record = self.registry.create(PATH, None, 1, stateful=True)
        connection = HubConnection(self.handler, record.connection_id, transport="WebSockets")
        connection.stateful_allowed = True
        record.connection = connection
        record.transport = "WebSockets"
        self.handover.remember(record, None)
        await asyncio.sleep(0.01)  # the handshake comes later, as over a socket
        await connection.receive(orjson.dumps({"protocol": "json", "version": 2}) + RS, False)
        assert connection.stateful
        return record, connection


async def add_node(cluster: Cluster, durable: bool = True, disconnect: float = 3.0) -> Node:
    handler = await cluster.add_node()
    node = cluster.nodes[-1]
    handover = Handover(
        ConnectionRegistry(),
        node,
        {PATH: handler},
        BackgroundTasks(),
        owners=False,
        durable=durable,
        disconnect_timeout=disconnect,
    )
    await handover.start()
    return Node(handler, node, handover)


async def crash(node: Node) -> None:
    """As SIGKILL: no heartbeat, no leave, the Redis connections close with what was queued."""
    redis_node = node.node
    for task in (redis_node._heartbeat_task, redis_node._watch_task):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    redis_node._started = False
    if node.handover.recorder is not None:
        node.handover.recorder.stop()
    bus = redis_node.bus
    for side in (bus._writer, bus._subscriber):
        side.cancel()
    for side in (bus._writer, bus._subscriber):
        await side.stopped()
        await side.close()


async def close(nodes: list[Node]) -> None:
    for n in nodes:
        n.handover.stop()
        for record in list(n.registry.records.values()):
            if record.connection is not None:
                with contextlib.suppress(Exception):
                    await record.connection.transport_closed()
        await n.tasks.close(1.0)


class Client:
    """What a stateful client sees: numbered messages, once each, never a skip."""

    def __init__(self) -> None:
        self.last = 0  # the number of the last tracked message seen
        self._next = 1
        self.messages: list[Any] = []  # tracked messages seen, in order
        self.duplicates = 0
        self.sequences: list[int] = []

    def read(self, connection: HubConnection) -> int:
        """Take what the connection let go; returns how many new tracked messages."""
        data = connection.outbound.take()
        if data.startswith(b"{}" + RS):
            data = data[3:]  # the handshake's answer
        if not data:
            return 0
        messages, consumed = JSON_PROTOCOL.parse_messages(data)
        assert consumed == len(data)
        new = 0
        for message in messages:
            if isinstance(message, SequenceMessage):
                first = message.sequence_id
                assert first <= self.last + 1, f"Sequence {first} skips past {self.last}"
                self.sequences.append(first)
                self._next = first
            elif type(message) in TRACKED:
                number = self._next
                self._next += 1
                if number <= self.last:
                    self.duplicates += 1  # sent again after a resume: the client drops it
                    continue
                assert number == self.last + 1
                self.last = number
                self.messages.append(message)
                new += 1
        return new

    async def ack(self, connection: HubConnection, number: int | None = None) -> None:
        """Acknowledge up to ``number`` (default: all seen)."""
        n = self.last if number is None else number
        await connection.receive(orjson.dumps({"type": 8, "sequenceId": n}) + RS, False)

    def invocations(self, target: str = "N") -> list[tuple[Any, ...]]:
        return [
            tuple(m.arguments)
            for m in self.messages
            if isinstance(m, InvocationMessage) and m.target == target
        ]


async def publish(name: str, node: Node, count: int, sent: list[tuple[str, int]]) -> None:
    """``count`` numbered messages to the group ``room`` from ``node``."""
    for i in range(1, count + 1):
        await node.handler.context.clients.group("room").send("N", name, i)
        sent.append((name, i))
        await asyncio.sleep(0.002 if i % 3 else 0)
