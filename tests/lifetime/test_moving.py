"""A stateful connection moving between nodes under traffic, in process, on a real Redis.

The holder quiets the connection and writes it down with its delivery positions; the taker
captured the connection's channels before asking and hands it what the holder had not
delivered. Traffic from three publishers (another node, the taker itself, the holder itself)
runs all along; the client, which drops numbers it has seen, must see every message exactly
once and in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson

from backplane import HubConnection, moving
from backplane.protocol import JSON_PROTOCOL, InvocationMessage, SequenceMessage
from backplane.redis.capture import read_positions
from tests.lifetime.cluster import Cluster

RS = b"\x1e"


async def _stateful(handler: Any, cid: str) -> HubConnection:
    connection = HubConnection(handler, cid, transport="WebSockets")
    connection.stateful_allowed = True
    await connection.receive(orjson.dumps({"protocol": "json", "version": 2}) + RS, False)
    assert connection.stateful
    return connection


def _parse(data: bytes) -> list[Any]:
    messages, consumed = JSON_PROTOCOL.parse_messages(data)
    assert consumed == len(data)
    return messages


async def test_a_moving_connection_sees_every_message_once_and_in_order(
    cluster: Cluster,
) -> None:
    holder, taker, other = [await cluster.add_node() for _ in range(3)]
    old = await _stateful(holder, "moving")
    await holder.context.groups.add("moving", "room")
    assert old.outbound.take().startswith(b"{}")
    sent: list[tuple[str, int]] = []

    async def publish(name: str, handler: Any, count: int) -> None:
        for i in range(1, count + 1):
            await handler.context.clients.group("room").send("N", name, i)
            sent.append((name, i))
            await asyncio.sleep(0.001 if i % 3 else 0)

    traffic = [
        asyncio.ensure_future(publish(name, handler, 150))
        for name, handler in (("other", other), ("taker", taker), ("holder", holder))
    ]
    await asyncio.sleep(0.05)
    # The socket drops: what the client had is what it took so far.
    seen = _parse(old.outbound.take())
    old.detach()
    await asyncio.sleep(0.02)
    # The taker captures first, then asks; the holder quiets and writes down, then forgets.
    taker_manager = cluster.lifetime(taker)
    await taker_manager.capture("moving", None, ["room"])
    await asyncio.sleep(0.02)
    assert await moving.quiesce(old, 1.0)
    state = moving.export(old)
    state["positions"] = cluster.lifetime(holder).positions(old)
    await old.transport_closed(moved=True)
    # Over the wire, as the node call carries it.
    state = msgpack.unpackb(msgpack.packb(state, use_bin_type=True), strict_map_key=False)
    new = moving.restore(taker, state, user=None)
    await taker_manager.adopt(new, state["groups"], read_positions(state["positions"]))
    new.resume()
    await asyncio.gather(*traffic)
    await asyncio.sleep(0.3)  # the last cross-node messages
    after = _parse(new.outbound.take())
    assert isinstance(after[0], SequenceMessage)
    first = after[0].sequence_id
    numbered = list(enumerate(after[1:], start=first))
    client = seen + [m for n, m in numbered if n > len(seen)]
    got = [tuple(m.arguments) for m in client if isinstance(m, InvocationMessage)]
    for name in ("other", "taker", "holder"):
        mine = [i for n, i in got if n == name]
        assert mine == list(range(1, 151)), (name, mine)
    assert len(got) == len(sent) == 450
    # The move kept the group and the node-level bookkeeping.
    assert new.groups == {"room"}
    assert "moving" not in cluster.lifetime(holder).connections
