"""The Redis lifetime manager on a Redis Cluster (three masters), with sharded pub/sub.

The cluster-agnostic tests of ``test_redis_manager.py`` run here again, on the session's
Redis Cluster (``redis_cluster``): the ``cluster`` fixture below puts the in-process nodes on
it. The tests of this module's own check what only a cluster has: channels spread over the
shards, the key layout's hash tags, the URL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backplane.redis import keys
from backplane.redis.bus import RedisBus
from backplane.redis.connect import cluster_node_url, cluster_seeds, is_cluster_url
from backplane.redis.slots import key_slot, routing_key
from tests.conftest import LOOPBACK
from tests.lifetime.cluster import Cluster, targets
from tests.lifetime.test_redis_manager import (  # run again on the Redis Cluster
    test_abort_and_abort_user_from_another_node,
    test_all_and_all_except_reach_every_node,
    test_group_add_from_another_node_and_group_sends,
    test_group_change_for_an_unknown_connection_fails_fast,
    test_presence_answers_for_the_cluster,
    test_users_and_single_connections_across_nodes,
)
from tests.redis_cluster import command

__all__ = [
    "test_abort_and_abort_user_from_another_node",
    "test_all_and_all_except_reach_every_node",
    "test_group_add_from_another_node_and_group_sends",
    "test_group_change_for_an_unknown_connection_fails_fast",
    "test_presence_answers_for_the_cluster",
    "test_users_and_single_connections_across_nodes",
]


@pytest.fixture
async def cluster(redis_cluster: Any) -> AsyncIterator[Cluster]:
    """In-process nodes on the session's Redis Cluster, under a private prefix."""
    c = Cluster(redis_cluster.url)
    try:
        yield c
    finally:
        await c.close()


def test_cluster_urls() -> None:
    url = "rediss+cluster://user:secret@h1:7000,h2:7001/0?ssl_cert_reqs=none"
    assert is_cluster_url(url) and not is_cluster_url("redis://h:1")
    assert cluster_seeds(url) == [("h1", 7000), ("h2", 7001)]
    assert cluster_seeds("redis+cluster://h") == [("h", 6379)]
    assert cluster_node_url(url, "10.0.0.9", 7005) == (
        "rediss://user:secret@10.0.0.9:7005/0?ssl_cert_reqs=none"
    )
    with pytest.raises(ValueError, match="database 0"):
        cluster_seeds("redis+cluster://h:1/2")
    with pytest.raises(ValueError, match="sharded pub/sub needs a Redis Cluster"):
        RedisBus("redis://h:1/0", pubsub="sharded")


def test_commands_route_by_their_key() -> None:
    assert routing_key(("HSET", b"k", b"f", b"v")) == b"k"
    assert routing_key(("EVALSHA", "sha", 2, b"k1", b"k2", b"a")) == b"k1"
    assert routing_key(("EVALSHA", "sha", 0, b"a")) is None
    assert routing_key(("PUBSUB", "SHARDNUMSUB", b"ch")) == b"ch"
    assert routing_key(("INFO", "server")) is None and routing_key(("TIME",)) is None


@pytest.mark.parametrize("prefix", [b"", b"app:", b"a{b", b"x}y{", b"{}", b"}", b"}x{"])
def test_keys_of_one_script_share_a_slot_on_a_cluster(prefix: bytes) -> None:
    node_level = [
        keys.nodes_key(prefix, True),
        keys.node_key(prefix, "n1", True),
        keys.purge_lease_key(prefix, "n1", True),
    ]
    assert len({key_slot(k) for k in node_level}) == 1
    hub = keys.PresenceKeys(prefix + b"My.Hub", cluster=True)
    presence = [hub.conns, hub.node("n"), hub.user("u}"), hub.group("{g}"), hub.groups_of("c")]
    assert len({key_slot(k) for k in presence}) == 1
    # --durable-resume: a connection's record in one slot; a channel's history in the
    # channel's slot, the watched channels in the announcements' (scripts SPUBLISH there).
    entry = keys.resume_key(prefix, "token")
    record = [entry, keys.resume_log_key(entry, True), keys.resume_pos_key(entry, True)]
    assert len({key_slot(k) for k in record}) == 1
    for channel in [b"P:group:room", b"P:group:{g}", b"a}b{", b"{}x", b"}{", b"{a}{b}", b""]:
        assert key_slot(keys.history_key(prefix, channel, True)) == key_slot(channel), channel
        # classic pub/sub: on the master of slot 0, where the classic publishes go
        assert key_slot(keys.history_key(prefix, channel, True, sharded=False)) == 0
    watched = keys.watched_key(prefix, True)
    assert key_slot(watched) == key_slot(keys.watch_channel(prefix))
    # The classic layout is unchanged (a rolling upgrade shares one Redis).
    assert keys.nodes_key(prefix) == prefix + b"hubplane:nodes"
    assert keys.watched_key(prefix) == prefix + b"hubplane:watched"
    assert keys.history_key(prefix, b"c") == prefix + b"hubplane:hist:{c}"
    assert keys.PresenceKeys(prefix + b"H").conns == prefix + b"H:hubplane:conns"


async def test_group_channels_spread_over_the_shards(cluster: Cluster, redis_cluster: Any) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h1, "a")
    b = await cluster.connect(h2, "b")
    groups = [f"room-{i}" for i in range(12)]
    for group in groups:
        await h1.context.groups.add("b", group)
    for group in groups:
        await h1.context.clients.group(group).send("Msg", group)
    got = targets(await b.wait_messages(len(groups)))
    assert sorted(got) == sorted(("Msg", [g]) for g in groups)
    # Each master holds the sharded channels of its own slots only; more than one holds some.
    per_master = {}
    for port in redis_cluster.master_ports():
        client = redis_cluster.client(port)
        try:
            per_master[port] = [
                c
                for c in client.execute_command("PUBSUB", "SHARDCHANNELS")
                if c.startswith(cluster.prefix.encode())
            ]
        finally:
            client.close()
    holding = [port for port, channels in per_master.items() if channels]
    assert len(holding) > 1, per_master
    group_channels = {c for chans in per_master.values() for c in chans if b":group:" in c}
    assert len(group_channels) == len(groups)
    # Classic pub/sub carries none of them.
    client = redis_cluster.client(redis_cluster.master_ports()[0])
    try:
        classic = client.execute_command("PUBSUB", "CHANNELS", cluster.prefix + "*")
    finally:
        client.close()
    assert classic == []
    assert targets(a.messages()) == []


async def test_classic_pubsub_on_a_cluster(redis_cluster: Any) -> None:
    """``--redis-pubsub classic``: the .NET layout on a cluster (PUBLISH, relayed by every
    shard); a client result's receiver count still counts (one master holds every channel)."""
    cluster = Cluster(redis_cluster.url)
    try:
        h1 = await cluster.add_node(pubsub="classic")
        h2 = await cluster.add_node(pubsub="classic")
        assert not cluster.lifetime(h1).bus.sharded
        a = await cluster.connect(h1, "a", user="ann")
        b = await cluster.connect(h2, "b", "messagepack")
        await h1.context.groups.add("b", "room")
        await h1.context.clients.group("room").send("Msg", 1)
        await h2.context.clients.user("ann").send("ForAnn")
        await h2.context.clients.all.send("All")
        # (from two nodes: in no particular order)
        assert sorted(targets(await b.wait_messages(2))) == [("All", []), ("Msg", [1])]
        assert sorted(targets(await a.wait_messages(2))) == [("All", []), ("ForAnn", [])]
        assert await h2.context.presence.group_members("room") == ["b"]
        sharded, classic = [], []
        for port in redis_cluster.master_ports():
            client = redis_cluster.client(port)
            try:
                sharded += client.execute_command("PUBSUB", "SHARDCHANNELS", cluster.prefix + "*")
                classic += client.execute_command("PUBSUB", "CHANNELS", cluster.prefix + "*")
            finally:
                client.close()
        assert sharded == [] and any(b":group:room" in c for c in classic)
    finally:
        await cluster.close()


def test_the_slot_map_and_redirections() -> None:
    from redis.exceptions import AskError, MovedError, ResponseError, TryAgainError

    from backplane.redis.slots import SlotMap, by_slot, is_retryable, redirection

    reply = [
        [0, 5460, [b"10.0.0.1", 7000, b"id1"]],
        [5461, 10922, [b"", 7001, b"id2"]],  # a node that does not know its own address
        [10923, 16383, [b"10.0.0.3", 7002, b"id3"]],
    ]
    slot_map = SlotMap.from_cluster_slots(reply, "10.0.0.9")
    assert slot_map.masters == [("10.0.0.1", 7000), ("10.0.0.9", 7001), ("10.0.0.3", 7002)]
    assert slot_map.route(None) == ("10.0.0.1", 7000)  # keyless: the master of slot 0
    assert slot_map.route(b"{a}x") == slot_map.owner(key_slot(b"a"))
    slot_map.moved(0, ("10.0.0.4", 7003))
    assert slot_map.owner(0) == ("10.0.0.4", 7003) and ("10.0.0.4", 7003) in slot_map.masters
    # redis-py turns "-MOVED 3999 host:port" into a MovedError whose text has no "MOVED".
    assert redirection(MovedError("3999 10.0.0.2:7001")) == ("MOVED", 3999, ("10.0.0.2", 7001))
    assert redirection(AskError("12 h:1")) == ("ASK", 12, ("h", 1))
    assert redirection(ResponseError("MOVED 5 h:2")) == ("MOVED", 5, ("h", 2))
    assert redirection(ResponseError("WRONGTYPE")) is None
    assert is_retryable(TryAgainError("x")) and is_retryable(ResponseError("CLUSTERDOWN x"))
    assert not is_retryable(ResponseError("ERR x"))
    runs = by_slot([b"{a}1", b"b", b"{a}2"])
    assert sorted(runs) == sorted([[b"{a}1", b"{a}2"], [b"b"]])


async def test_a_dead_seed_is_skipped(redis_cluster: Any) -> None:
    """The first seed of the URL does not answer: the next one gives the map."""
    dead = redis_cluster.url.replace("redis+cluster://", "redis+cluster://127.0.0.1:1,")
    cluster = Cluster(dead)
    try:
        h1, h2 = await cluster.add_node(), await cluster.add_node()
        b = await cluster.connect(h2, "b")
        await h1.context.clients.client("b").send("Hi")
        assert targets(await b.wait_messages(1)) == [("Hi", [])]
    finally:
        await cluster.close()


async def test_a_tls_cluster_with_a_password(tmp_path: Any) -> None:
    """``rediss+cluster://:password@...``: every node speaks TLS only (the cluster bus too) and
    asks for the password; the nodes verify the servers' certificate against the URL's
    ``ssl_ca_certs`` and give every master the URL's password."""
    from tests.redis_cluster import RedisCluster

    redis = RedisCluster(tmp_path, 3, tls=True, password="s3cret")
    redis.start()
    cluster = Cluster(redis.url)
    try:
        assert redis.url.startswith("rediss+cluster://:s3cret@")
        h1, h2 = await cluster.add_node(), await cluster.add_node()
        b = await cluster.connect(h2, "b", user="bob")
        for i in range(6):
            await h1.context.groups.add("b", f"tls-{i}")
        for i in range(6):
            await h1.context.clients.group(f"tls-{i}").send("Msg", i)
        got = targets(await b.wait_messages(6))
        assert sorted(got) == [("Msg", [i]) for i in range(6)]
        assert await h1.context.presence.user_connections("bob") == ["b"]
    finally:
        await cluster.close()
        redis.stop()


async def test_a_write_to_a_slot_being_migrated_follows_ask(redis_cluster: Any) -> None:
    """While a slot migrates, its old master answers ``ASK`` for a key it no longer holds:
    the writer sends the command once to the importing master, after ``ASKING``."""
    key = f"ask-test:{time.monotonic_ns()}".encode()
    slot = key_slot(key)
    source = redis_cluster.slot_owner(slot)
    target = next(p for p in redis_cluster.master_ports() if p != source)
    ids = redis_cluster.node_ids()
    bus = RedisBus(redis_cluster.url)
    await bus.start(wait=5.0)
    try:
        assert await bus.query("SET", key, b"before") is True  # on the old master
        command(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source])
        command(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target])
        try:
            command(source, "MIGRATE", LOOPBACK, str(target), "", "0", "5000", "KEYS", key.decode())
            redirected = bus.stats.redirections
            assert await bus.query("SET", key, b"after") is True
            assert bus.stats.redirections == redirected + 1
        finally:  # the slot ends up on the importing master, as a finished reshard leaves it
            for port in [target, source, *(p for p in ids if p not in (source, target))]:
                command(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target])
        assert command(target, "GET", key.decode()).strip() == "after"
    finally:
        await bus.stop()
