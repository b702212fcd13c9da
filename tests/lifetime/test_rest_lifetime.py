"""What the REST API needs of the lifetime layer: bytes delivered as they are, closes with a
reason, user groups, presence checks. Memory and Redis managers, the latter on a real Redis
with several in-process nodes (a private prefix per test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backplane import HubConnectionHandler, User
from backplane.lifetime.base import (
    TO_ALL,
    TO_CONNECTION,
    TO_GROUP,
    TO_USER,
    SerializedMessage,
)
from backplane.lifetime.usergroups import MAX_GROUPS_PER_USER, MemoryUserGroups
from backplane.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    CloseMessage,
    InvocationMessage,
)
from backplane.redis import keys, wire
from tests.hub.helpers import Client
from tests.lifetime.cluster import Cluster as RedisCluster
from tests.lifetime.cluster import RedisHub, targets


def ready_bytes(target: str, args: list[Any], only: str | None = None) -> SerializedMessage:
    """A message as a REST body brings it: framed bytes per protocol, no message object."""
    message = InvocationMessage(target, args)
    cache = {}
    for protocol in (JSON_PROTOCOL, MESSAGEPACK_PROTOCOL):
        if only is None or protocol.name == only:
            cache[protocol.name] = protocol.write_message(message)
    return SerializedMessage(None, cache)


def closes(client: Client) -> list[CloseMessage]:
    return [m for m in client.messages() if isinstance(m, CloseMessage)]


# --------------------------------------------------------------------------- wire


def test_control_close_round_trip_and_old_readers() -> None:
    close = wire.ControlClose(wire.CONTROL_CLOSE_GROUP, "room", "bye", ("c1",))
    data = wire.write_control_close(close)
    back = wire.read_control_close(data)
    assert (back.kind, back.target, back.reason, list(back.excluded)) == (3, "room", "bye", ["c1"])
    # An older reader takes the first two elements only.
    assert wire.read_control(data) == (3, "room")
    # The two-element form still reads, with no reason and nothing excluded.
    old = wire.read_control_close(wire.write_control(wire.CONTROL_ABORT_USER, "ann"))
    assert (old.kind, old.target, old.reason, list(old.excluded)) == (2, "ann", None, [])
    with pytest.raises(wire.WireError):
        wire.read_control_close(b"\x94\x01\xa1c\xc0\x05")  # excluded is not an array


def test_audience_channels_are_the_channels_of_each_proxy() -> None:
    ch = wire.Channels("App.Hub", b"p:")
    assert ch.audience(TO_ALL, "") == ch.all
    assert ch.audience(TO_GROUP, "g") == ch.group("g")
    assert ch.audience(TO_USER, "ü") == ch.user("ü")
    assert ch.audience(TO_CONNECTION, "c1") == ch.connection("c1")


def test_user_group_keys_share_one_nonempty_hash_tag() -> None:
    def tag(key: bytes) -> bytes:
        start = key.index(b"{")
        return key[start + 1 : key.index(b"}", start + 1)]

    for base, user in ((b"App.Hub", "ann"), (b"{t1:App.Hub", "x}y"), (b"p{x}App", ""), (b"H", "}")):
        added, expires = keys.user_groups_keys(base, user)
        assert added != expires
        assert tag(added) == tag(expires) and tag(added)


# --------------------------------------------------------------------------- memory


async def test_memory_user_groups_expire_and_keep_the_latest() -> None:
    now = [0.0]
    store = MemoryUserGroups(clock=lambda: now[0])
    await store.add("ann", "a", 10)
    await store.add("ann", "b", 1)
    assert await store.groups("ann") == ["a", "b"]
    now[0] = 2
    assert await store.groups("ann") == ["a"]
    assert not await store.contains("ann", "b")
    for i in range(MAX_GROUPS_PER_USER + 5):
        await store.add("bob", f"g{i}", 100)
    groups = await store.groups("bob")
    assert len(groups) == MAX_GROUPS_PER_USER and groups[0] == "g5"
    await store.add("bob", "g5", 100)  # re-adding makes it the latest
    assert (await store.groups("bob"))[-1] == "g5"
    assert await store.remove("bob", "g6")
    assert not await store.remove("bob", "g6")
    assert len(await store.clear("bob")) == MAX_GROUPS_PER_USER - 1
    assert await store.groups("bob") == []


async def test_memory_manager_delivers_bytes_closes_and_applies_user_groups() -> None:
    handler = HubConnectionHandler(RedisHub)
    lifetime = handler.lifetime
    assert lifetime.user_groups is not None
    lifetime.user_groups.apply_on_connect = True
    await lifetime.user_groups.add("ann", "room", 60)
    a = Client(handler, "a", "messagepack", user=User("ann"))
    await a.handshake()
    b = Client(handler, "b")
    await b.handshake()
    assert await lifetime.presence.group_members("room") == ["a"]
    assert await lifetime.presence.has_connection("a")
    assert not await lifetime.presence.has_connection("zz")
    assert await lifetime.presence.has_group_members("room")
    assert await lifetime.presence.users_of(["a", "b", "zz"]) == ["ann", None, None]
    # Only JSON bytes: the MessagePack client gets them re-encoded, once.
    await lifetime.deliver(TO_ALL, "", ready_bytes("Hi", [1], only="json"), exclude={"b"})
    assert targets(a.messages()) == [("Hi", [1])]
    assert targets(b.messages()) == []
    await lifetime.deliver(TO_GROUP, "room", ready_bytes("G", []))
    await lifetime.deliver(TO_USER, "ann", ready_bytes("U", []))
    await lifetime.deliver(TO_CONNECTION, "b", ready_bytes("C", []))
    assert targets(a.messages()) == [("G", []), ("U", [])]
    assert targets(b.messages()) == [("C", [])]
    await lifetime.close_connections(TO_ALL, "", "maintenance", exclude={"a"})
    [close] = closes(b)
    assert (close.error, close.allow_reconnect) == ("maintenance", False)
    assert closes(a) == []


# --------------------------------------------------------------------------- Redis


async def test_redis_deliver_sends_the_bytes_as_they_are_to_every_node(
    cluster: RedisCluster,
) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h1, "a", user="ann")
    b = await cluster.connect(h2, "b", "messagepack", user="ann")
    c = await cluster.connect(h2, "c")
    await h1.context.groups.add("c", "room")
    await h1.context.groups.add("b", "room")
    lifetime = h1.lifetime
    await lifetime.deliver(TO_ALL, "", ready_bytes("All", ["x"]), exclude={"c"})
    await lifetime.deliver(TO_GROUP, "room", ready_bytes("Room", [], only="messagepack"), {"b"})
    await lifetime.deliver(TO_USER, "ann", ready_bytes("Ann", [{"k": 1}]))
    await lifetime.deliver(TO_CONNECTION, "c", ready_bytes("C", [True]))
    assert targets(await a.wait_messages(2)) == [("All", ["x"]), ("Ann", [{"k": 1}])]
    assert targets(await b.wait_messages(2)) == [("All", ["x"]), ("Ann", [{"k": 1}])]
    assert targets(await c.wait_messages(2)) == [("Room", []), ("C", [True])]


async def test_redis_close_connections_with_a_reason_on_every_node(cluster: RedisCluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h1, "a", user="ann")
    b = await cluster.connect(h2, "b", user="ann")
    c = await cluster.connect(h2, "c")
    d = await cluster.connect(h2, "d")
    await h2.context.groups.add("c", "room")
    await h2.context.groups.add("d", "room")
    lifetime = h1.lifetime
    await lifetime.close_connections(TO_GROUP, "room", "group closed", exclude={"d"})
    await lifetime.close_connections(TO_USER, "ann", "user closed", exclude={"a"})
    await lifetime.close_connections(TO_CONNECTION, "a", "you")
    got = {}
    for name, client in (("a", a), ("b", b), ("c", c)):
        msgs = await client.wait_messages(1)
        got[name] = [(m.error, m.allow_reconnect) for m in msgs if isinstance(m, CloseMessage)]
    assert got == {
        "a": [("you", False)],
        "b": [("user closed", False)],
        "c": [("group closed", False)],
    }
    await asyncio.sleep(0.1)
    assert closes(d) == []


async def test_redis_user_groups_follow_later_connections_on_any_node(
    cluster: RedisCluster,
) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    for h in (h1, h2):
        assert h.lifetime.user_groups is not None
        h.lifetime.user_groups.apply_on_connect = True
    store = h1.lifetime.user_groups
    assert store is not None
    await store.add("ann", "room", 60)
    await store.add("ann", "brief", 0.3)
    assert await h2.lifetime.user_groups.groups("ann") == ["room", "brief"]  # type: ignore[union-attr]
    assert await store.contains("ann", "brief")
    a = await cluster.connect(h2, "a", user="ann")
    assert sorted(await h1.context.presence.groups_of("a")) == ["brief", "room"]
    await asyncio.sleep(0.4)
    assert not await store.contains("ann", "brief")
    b = await cluster.connect(h1, "b", user="ann")
    assert await h1.context.presence.groups_of("b") == ["room"]
    await h1.context.clients.group("room").send("Room")
    assert targets(await a.wait_messages(1)) == [("Room", [])]
    assert targets(await b.wait_messages(1)) == [("Room", [])]
    for i in range(MAX_GROUPS_PER_USER + 3):
        await store.add("bob", f"g{i}", 60)
    groups = await store.groups("bob")
    assert len(groups) == MAX_GROUPS_PER_USER and groups[0] == "g3"
    assert await store.remove("ann", "room")
    assert not await store.remove("ann", "room")
    assert len(await store.clear("bob")) == MAX_GROUPS_PER_USER
    assert await store.groups("bob") == []


async def test_redis_presence_checks(cluster: RedisCluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    await cluster.connect(h2, "a", user="ann")
    await cluster.connect(h2, "b")
    await h2.context.groups.add("b", "room")
    presence = h1.context.presence
    assert await presence.has_connection("a")
    assert not await presence.has_connection("zz")
    assert await presence.has_group_members("room")
    assert not await presence.has_group_members("empty")
    assert await presence.users_of(["a", "b", "zz"]) == ["ann", None, None]


async def test_bytes_given_per_protocol_reach_clients_unchanged(cluster: RedisCluster) -> None:
    """Serialize-once for REST bodies: the given framed bytes are what a client of that
    protocol gets, on the publishing node and across Redis (spacing and key order kept)."""
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    local = await cluster.connect(h1, "local")
    remote = await cluster.connect(h2, "remote")
    text = b'{ "arguments" : [ 1 ,2 ], "type":1, "target":"Odd"  }\x1e'
    await h1.lifetime.deliver(TO_ALL, "", SerializedMessage(None, {"json": text}))
    for client in (local, remote):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2
        raw = b""
        while text not in raw and loop.time() < deadline:
            raw += client.conn.outbound.take()
            await asyncio.sleep(0.01)
        assert text in raw, raw
