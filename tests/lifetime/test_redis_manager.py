"""The Redis lifetime manager with several nodes in one process, on a real redis-server.

Each test uses its own channel prefix, so tests sharing the session's Redis never see each
other's messages or presence keys.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from backplane import ConnectionNotFoundError
from backplane.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    CompletionMessage,
    InvocationMessage,
)
from backplane.redis import wire
from tests.lifetime.cluster import HUB, Cluster, settle, targets


async def test_all_and_all_except_reach_every_node(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h1, "a")
    b = await cluster.connect(h2, "b", "messagepack")
    c = await cluster.connect(h2, "c")
    await h1.context.clients.all.send("Hello", 1)
    await h2.context.clients.all_except(["c"]).send("Hello", 2)
    for client, expected in ((a, 2), (b, 2), (c, 1)):
        got = targets(await client.wait_messages(expected))
        assert len(got) == expected, (client.conn.connection_id, got)
    # The sender's own node delivered directly and skipped its echo from Redis.
    await settle()
    assert targets(a.messages()) == []


async def test_group_add_from_another_node_and_group_sends(cluster: Cluster) -> None:
    h1, h2, h3 = await cluster.add_node(), await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h1, "a")
    b = await cluster.connect(h2, "b")
    c = await cluster.connect(h3, "c")
    # h1 adds connections owned by h2 and h3: group commands with acks.
    await h1.context.groups.add("b", "room")
    await h1.context.groups.add("c", "room")
    await h1.context.groups.add("a", "room")
    await h3.context.clients.group("room").send("Msg", "x")
    for client in (a, b, c):
        assert targets(await client.wait_messages(1)) == [("Msg", ["x"])]
    await h2.context.clients.group_except("room", ["a"]).send("Msg", "y")
    assert targets(await b.wait_messages(1)) == [("Msg", ["y"])]
    assert targets(await c.wait_messages(1)) == [("Msg", ["y"])]
    await settle()
    assert targets(a.messages()) == []
    # Remove from another node, then the group no longer reaches it.
    await h3.context.groups.remove("b", "room")
    assert await h1.context.presence.group_members("room") in (["a", "c"], ["c", "a"])
    await h1.context.clients.group("room").send("Msg", "z")
    assert targets(await c.wait_messages(1)) == [("Msg", ["z"])]
    await settle()
    assert targets(b.messages()) == []


async def test_users_and_single_connections_across_nodes(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    u1 = await cluster.connect(h1, "u1", user="ann")
    u2 = await cluster.connect(h2, "u2", "messagepack", user="ann")
    other = await cluster.connect(h2, "o", user="bob")
    await h1.context.clients.user("ann").send("ForAnn")
    assert targets(await u1.wait_messages(1)) == [("ForAnn", [])]
    assert targets(await u2.wait_messages(1)) == [("ForAnn", [])]
    await h1.context.clients.users(["bob"]).send("ForBob")
    assert targets(await other.wait_messages(1)) == [("ForBob", [])]
    await h1.context.clients.client("o").send("Direct", {"k": 1})
    assert targets(await other.wait_messages(1)) == [("Direct", [{"k": 1}])]
    await h2.context.clients.clients(["u1", "u2"]).send("Both")
    assert targets(await u1.wait_messages(1)) == [("Both", [])]
    assert targets(await u2.wait_messages(1)) == [("Both", [])]
    await settle()
    assert targets(u1.messages()) == targets(other.messages()) == []


async def test_presence_answers_for_the_cluster(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    await cluster.connect(h1, "a", user="ann")
    await cluster.connect(h2, "b", user="ann")
    await cluster.connect(h2, "c")
    await h2.context.groups.add("a", "g1")
    await h1.context.groups.add("c", "g1")
    await h1.context.groups.add("c", "g2")
    presence = h1.context.presence
    assert sorted(await presence.connections()) == ["a", "b", "c"]
    assert await presence.count_connections() == 3
    assert sorted(await presence.group_members("g1")) == ["a", "c"]
    assert sorted(await presence.user_connections("ann")) == ["a", "b"]
    assert await presence.is_user_online("ann")
    assert not await presence.is_user_online("nobody")
    assert await presence.groups_of("c") == ["g1", "g2"]
    nodes = {n["id"]: n for n in await h2.context.presence.nodes()}
    assert set(nodes) == {cluster.nodes[0].node_id, cluster.nodes[1].node_id}
    assert nodes[cluster.nodes[1].node_id]["connections"] == 2
    assert nodes[cluster.nodes[0].node_id]["last_heartbeat"] > time.time() - 5
    # A disconnect removes the connection, its groups and its user entry.
    await cluster.clients[2].conn.transport_closed()
    await settle()
    assert sorted(await presence.connections()) == ["a", "b"]
    assert await presence.group_members("g2") == []
    assert await presence.groups_of("c") == []


async def test_a_dead_node_is_purged_and_a_wiped_redis_is_refilled(
    cluster: Cluster, redis_server: Any
) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    await cluster.connect(h1, "a")
    await cluster.connect(h2, "b", user="bob")
    await h2.context.groups.add("b", "g")
    # Node 2 stops heartbeating (as if SIGKILLed): survivors purge it within the timeout.
    beat = cluster.nodes[1]._heartbeat_task
    assert beat is not None
    beat.cancel()
    presence = h1.context.presence
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "b" in await presence.connections():
        await asyncio.sleep(0.1)
    assert await presence.connections() == ["a"]
    assert await presence.group_members("g") == []
    assert not await presence.is_user_online("bob")
    assert [n["id"] for n in await presence.nodes()] == [cluster.nodes[0].node_id]
    # Redis loses this cluster's keys: node 1 notices at its next heartbeat and re-registers.
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in r.scan_iter(match=cluster.prefix + "*")]
        assert keys
        await r.delete(*keys)
    finally:
        await r.aclose()
    await h1.context.groups.add("a", "g")  # written again by the re-registration too
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not await presence.nodes():
        await asyncio.sleep(0.1)
    assert [n["id"] for n in await presence.nodes()] == [cluster.nodes[0].node_id]
    assert await presence.connections() == ["a"]
    assert await presence.group_members("g") == ["a"]


async def test_group_change_for_an_unknown_connection_fails_fast(cluster: Cluster) -> None:
    h1, _h2 = await cluster.add_node(), await cluster.add_node()
    started = time.monotonic()
    with pytest.raises(ConnectionNotFoundError, match="does not exist"):
        await h1.context.groups.add("no-such-connection", "g")
    assert time.monotonic() - started < 1.6


async def test_abort_and_abort_user_from_another_node(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h2, "a")
    b1 = await cluster.connect(h2, "b1", user="bob")
    b2 = await cluster.connect(h1, "b2", user="bob")
    keep = await cluster.connect(h2, "keep")
    await h1.context.abort("a")
    await h1.context.abort_user("bob")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not (a.conn.closing and b1.conn.closing):
        await asyncio.sleep(0.01)
    assert a.conn.closing and b1.conn.closing and b2.conn.closing
    assert not keep.conn.closing


async def test_messages_from_dotnet_nodes_and_services(cluster: Cluster, redis_server: Any) -> None:
    """Invocations in the plain .NET layout (no origin; json only) reach every protocol."""
    h1 = await cluster.add_node()
    j = await cluster.connect(h1, "j")
    m = await cluster.connect(h1, "m", "messagepack")
    ch = wire.Channels(HUB, cluster.prefix)
    payload = JSON_PROTOCOL.write_message(InvocationMessage("FromNet", ["hi", 2]))
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await r.publish(ch.all, wire.write_invocation({"json": payload}, ["j"])) == 1
        assert targets(await m.wait_messages(1)) == [("FromNet", ["hi", 2])]
        # Malformed bytes are dropped with a log line; the node keeps going.
        await r.publish(ch.all, b"\xc1garbage")
        await r.publish(ch.connection("j"), b"\x92")
        await r.publish(ch.internal_groups, b"\x93\x01")
        await r.publish(ch.all, wire.write_invocation({"json": payload}))
        assert targets(await j.wait_messages(1)) == [("FromNet", ["hi", 2])]
    finally:
        await r.aclose()
    await settle()
    assert targets(j.messages()) == []


async def test_client_result_requested_by_another_server(
    cluster: Cluster, redis_server: Any
) -> None:
    """A 4-element invocation is forwarded and the client's answer published back."""
    h1 = await cluster.add_node()
    client = await cluster.connect(h1, "c1", "messagepack")
    ch = wire.Channels(HUB, cluster.prefix)
    invocation = InvocationMessage("GetAnswer", [1], invocation_id="inv-1")
    payloads = {
        "json": JSON_PROTOCOL.write_message(invocation),
        "messagepack": MESSAGEPACK_PROTOCOL.write_message(invocation),
    }
    r = aioredis.Redis.from_url(redis_server.url)
    pubsub = r.pubsub()
    try:
        await pubsub.subscribe(ch.return_channel("other-server"))
        await pubsub.get_message(timeout=1)  # subscribe confirmation
        data = wire.write_invocation(
            payloads,
            invocation_id="inv-1",
            return_channel=ch.return_channel_name("other-server"),
        )
        assert await r.publish(ch.connection("c1"), data) == 1
        got = await client.wait_messages(1)
        assert [(m.target, m.invocation_id) for m in got] == [("GetAnswer", "inv-1")]
        await client.send(CompletionMessage.with_result("inv-1", 42))
        reply = None
        deadline = time.monotonic() + 2
        while reply is None and time.monotonic() < deadline:
            reply = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        assert reply is not None
        name, framed = wire.read_completion(reply["data"])
        assert name == "messagepack"
        (completion,), _ = MESSAGEPACK_PROTOCOL.parse_messages(framed)
        assert isinstance(completion, CompletionMessage)
        assert (completion.invocation_id, completion.result) == ("inv-1", 42)
    finally:
        await pubsub.aclose()
        await r.aclose()


async def test_presence_entries_are_msgpack_records(cluster: Cluster, redis_server: Any) -> None:
    h1 = await cluster.add_node()
    await cluster.connect(h1, "a", user="ann")
    await h1.context.presence.count_connections()  # ordered after the writes
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        raw = await r.hget(f"{cluster.prefix}{HUB}:hubplane:conns", "a")
    finally:
        await r.aclose()
    assert msgpack.unpackb(raw) == [cluster.nodes[0].node_id, "ann"]


async def test_payloads_with_fewer_protocols(cluster: Cluster, redis_server: Any) -> None:
    """--redis-payload-protocols: one protocol on the wire, every client still served."""
    h1 = await cluster.add_node(payload_protocols=("messagepack",))
    h2 = await cluster.add_node(payload_protocols=("messagepack",))
    j = await cluster.connect(h2, "j")
    m = await cluster.connect(h2, "m", "messagepack")
    r = aioredis.Redis.from_url(redis_server.url)
    pubsub = r.pubsub()
    try:
        await pubsub.subscribe(wire.Channels(HUB, cluster.prefix).all)
        await pubsub.get_message(timeout=1)
        await h1.context.clients.all.send("Lean", {"n": 1}, "x")
        raw = None
        deadline = time.monotonic() + 2
        while raw is None and time.monotonic() < deadline:
            raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        assert raw is not None
        assert sorted(wire.read_invocation(raw["data"]).payloads) == ["messagepack"]
    finally:
        await pubsub.aclose()
        await r.aclose()
    assert targets(await j.wait_messages(1)) == [("Lean", [{"n": 1}, "x"])]
    assert targets(await m.wait_messages(1)) == [("Lean", [{"n": 1}, "x"])]
