"""A Redis Cluster master killed under traffic: its replica takes over, nothing is lost or twice.

A cluster of its own (three masters, three replicas, a short node timeout: a failover takes
a second or two). One node publishes numbered messages to groups whose channels live on
every shard, at a steady rate; a member on another node counts what arrives. The master of
one of those channels is killed (SIGKILL) mid-stream. Meanwhile the publishing node keeps
its publishes (the outage buffer) and sends them once its writer has the new map; the
receiving node moves its subscriptions to the promoted replica; the receivers drop the
duplicates a resent batch may carry (the publisher's sequence numbers). The test counts
lost and duplicated messages: both must be 0. It runs with sharded pub/sub and with classic
pub/sub on the cluster (where the master of slot 0 carries every node's subscriptions). A slot
migrated under traffic (a reshard) loses nothing either.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backplane import HubConnectionHandler, HubOptions
from backplane.protocol import InvocationMessage
from backplane.redis import keys
from backplane.redis.node import RedisNode
from backplane.redis.slots import key_slot
from tests.lifetime.cluster import HUB, Cluster, RedisHub, targets, wait_until
from tests.redis_cluster import RedisCluster

GROUPS = 9
RATE = 400  # messages per second, all groups together
BEFORE_KILL = 1.0  # seconds of traffic before the kill
AFTER_KILL = 4.0  # and after it


@pytest.fixture(scope="module")
def replicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters with a replica each (this module's own: a test kills a master)."""
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("redis-cluster-ha")), 3, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _owner(cluster: RedisCluster, channel: bytes) -> int:
    """The port of the master serving ``channel``'s slot."""
    return cluster.slot_owner(key_slot(channel))


def _subscribers(cluster: RedisCluster, port: int, channel: bytes) -> int:
    client = cluster.client(port)
    try:
        return int(client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])
    finally:
        client.close()


async def test_a_migrated_slot_takes_its_channel_along(replicated_cluster: RedisCluster) -> None:
    """A slot moved to another master (a reshard): Redis tells the subscriber (it pushes
    ``sunsubscribe``) and refuses the old master's publishes (``MOVED``): the channel is
    subscribed on the new master and the writer publishes there. Under traffic nothing is
    lost: the writer waits ``moved_pause`` (50 ms) before its first publish at the new
    master, time for the subscribers to get there (a few ms here); without that pause 1 to
    3 messages of 400 were lost (sharded pub/sub keeps nothing for a late subscriber)."""
    cluster = Cluster(replicated_cluster.url)
    try:
        sender = await cluster.add_node()
        receiver = await cluster.add_node()
        member = await cluster.connect(receiver, "member")
        await receiver.context.groups.add("member", "moving")
        channel = f"{cluster.prefix}{HUB}:group:moving".encode()
        slot = key_slot(channel)
        source = _owner(replicated_cluster, channel)
        target = next(p for p in replicated_cluster.master_ports() if p != source)
        await sender.context.clients.group("moving").send("N", 0)
        assert [m.arguments for m in await member.wait_messages(1)] == [[0]]
        replicated_cluster.migrate_slot(slot, target)
        assert await wait_until(lambda: _subscribers(replicated_cluster, target, channel) == 1, 5)
        assert _subscribers(replicated_cluster, source, channel) == 0
        for n in range(1, 6):
            await sender.context.clients.group("moving").send("N", n)
        got = [m.arguments for m in await member.wait_messages(5, timeout=5)]
        assert got == [[n] for n in range(1, 6)]
        assert cluster.lifetime(sender).bus.stats.redirections >= 1  # the old master: MOVED
        assert cluster.lifetime(receiver).bus.stats.channel_moves >= 1

        # Back to the first master, under traffic: what the moment of the move costs.
        sent, received = 0, []

        async def drain() -> None:
            while True:
                received.extend(int(m.arguments[0]) for m in member.messages())
                await asyncio.sleep(0.005)

        drainer = asyncio.get_running_loop().create_task(drain())
        loop = asyncio.get_running_loop()
        migrating = loop.run_in_executor(None, replicated_cluster.migrate_slot, slot, source)
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            await sender.context.clients.group("moving").send("N", 100 + sent)
            sent += 1
            await asyncio.sleep(0.002)
        await migrating
        await wait_until(lambda: len(set(received)) >= sent, 3)
        drainer.cancel()
        lost = sent - len(set(received))
        duplicated = len(received) - len(set(received))
        print(
            f"\nmigration under traffic: {sent} sent, {lost} lost, {duplicated} duplicated; "
            f"receiver gaps {cluster.nodes[1].received.stats.gaps}"
        )
        assert (lost, duplicated) == (0, 0)
    finally:
        await cluster.close()


@pytest.mark.parametrize("pubsub", ["sharded", "classic"])
async def test_a_master_killed_under_traffic_loses_nothing(
    ha_cluster: RedisCluster, pubsub: str
) -> None:
    """Sharded: the master of most of the groups' channels is killed. Classic: the master of
    slot 0, where every node subscribes and publishes."""
    replicated_cluster = ha_cluster
    cluster = Cluster(replicated_cluster.url)
    try:
        sender = await cluster.add_node(pubsub=pubsub)
        receiver = await cluster.add_node(pubsub=pubsub)
        member = await cluster.connect(receiver, "member")
        groups = [f"g{i}" for i in range(GROUPS)]
        for group in groups:
            await receiver.context.groups.add("member", group)
        channels = {g: f"{cluster.prefix}{HUB}:group:{g}".encode() for g in groups}
        owners = {g: _owner(replicated_cluster, channels[g]) for g in groups}
        assert len(set(owners.values())) > 1, owners  # the groups span several shards
        victim = Counter(owners.values()).most_common(1)[0][0]
        if pubsub == "classic":
            victim = replicated_cluster.slot_owner(0)

        received: list[int] = []
        arrivals: list[float] = []

        async def drain() -> None:
            while True:
                for m in member.messages():
                    if isinstance(m, InvocationMessage) and m.target == "N":
                        received.append(int(m.arguments[0]))
                        arrivals.append(time.monotonic())
                await asyncio.sleep(0.005)

        drainer = asyncio.get_running_loop().create_task(drain())
        sent = 0
        killed_at = 0.0
        start = time.monotonic()
        interval = 1.0 / RATE
        while time.monotonic() - start < BEFORE_KILL + AFTER_KILL:
            if not killed_at and time.monotonic() - start >= BEFORE_KILL:
                replicated_cluster.kill(victim)
                killed_at = time.monotonic()
            await sender.context.clients.group(groups[sent % GROUPS]).send("N", sent)
            sent += 1
            await asyncio.sleep(interval)
        # Everything sent arrives, once, within a bounded time.
        deadline = time.monotonic() + 15
        while len(set(received)) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        drainer.cancel()
        lost = sent - len(set(received))
        duplicated = len(received) - len(set(received))
        bus = cluster.lifetime(sender).bus
        silence = max(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))
        print(
            f"\nfailover ({pubsub}): {sent} sent, {lost} lost, {duplicated} duplicated; "
            f"longest silence {silence:.2f} s; "
            f"sender buffered {bus.stats.buffered}, dropped {bus.stats.dropped}, "
            f"replayed {bus.stats.replayed}; "
            f"receiver gaps {cluster.nodes[1].received.stats.gaps}, "
            f"duplicates dropped {cluster.nodes[1].received.stats.duplicates}"
        )
        assert (lost, duplicated) == (0, 0)
        # The promoted replica serves the victim's channels now.
        new_owners = {g: _owner(replicated_cluster, channels[g]) for g in groups}
        assert victim not in new_owners.values()
    finally:
        await cluster.close()


async def test_nodes_started_before_the_cluster_join_it_when_it_comes(tmp_path: Path) -> None:
    """A node whose cluster is not there yet serves locally, retries, and joins once it is."""
    redis = RedisCluster(tmp_path, 3)
    cluster = Cluster(redis.url)
    try:
        nodes = []
        for _ in range(2):
            node = RedisNode(redis.url, channel_prefix=cluster.prefix, heartbeat=0.2, timeout=1.0)
            node.bus.connect_wait = 0.2
            manager = node.manager(HUB, ("json", "messagepack"))
            handler = HubConnectionHandler(RedisHub, HubOptions(), manager)
            await manager.start()
            cluster.nodes.append(node)
            cluster.handlers.append(handler)
            nodes.append(handler)
        h1, h2 = nodes
        b = await cluster.connect(h2, "b")
        assert not cluster.lifetime(h1).bus.connected
        await asyncio.get_running_loop().run_in_executor(None, redis.start)
        assert await wait_until(lambda: all(cluster.lifetime(h).bus.connected for h in nodes), 10)
        # h2 wrote its presence when its writer connected (b is known: the group change
        # waits for its ack, held with the publishes for a moment after a reconnect).
        assert await _wait_async(lambda: h1.context.presence.has_connection("b"), 5)
        await h1.context.groups.add("b", "late")
        await h1.context.clients.group("late").send("Hi")
        assert targets(await b.wait_messages(1, timeout=5)) == [("Hi", [])]
    finally:
        await cluster.close()
        redis.stop()


async def test_presence_writes_a_failover_lost_are_written_again(
    ha_cluster: RedisCluster,
) -> None:
    """Replication is asynchronous: a master may die with writes its replica never got. Here
    the replica is frozen while a connection's presence entries are written, then the master
    is killed and the replica, thawed, takes over without them. Every node writes its entries
    again after a failover (its subscriber moved channels), so the connection is listed again
    though its node's writer never used the failed master again."""
    redis = ha_cluster
    # Nodes whose writers have no business with the presence master once the entries are
    # written (their heartbeats and liveness checks go to other masters): else their writer
    # would meet the failure and write everything again anyway.
    for _ in range(30):
        cluster = Cluster(redis.url)
        h1, h2 = await cluster.add_node(), await cluster.add_node()
        presence_slot = key_slot(cluster.lifetime(h1).keys.conns)
        master = redis.slot_owner(presence_slot)
        routine = [cluster.nodes[0].nodes_key] + [
            keys.node_channel(cluster.nodes[0].prefix, n.node_id) for n in cluster.nodes
        ]
        if master not in {redis.slot_owner(key_slot(k)) for k in routine}:
            break
        await cluster.close()
    else:
        pytest.fail("no prefix of 30 kept the presence master out of the nodes' routine")
    try:
        replica = redis.replica_of(master)
        redis.freeze(replica)
        try:
            await cluster.connect(h2, "late")
            assert await _wait_async(lambda: h1.context.presence.has_connection("late"), 5)
            redis.kill(master)
        finally:
            redis.thaw(replica)
        assert await wait_until(lambda: redis.slot_owner(presence_slot) == replica, 15)
        assert await _wait_async(lambda: h1.context.presence.has_connection("late"), 10)
    finally:
        await cluster.close()


async def _wait_async(condition: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await condition():
                return True
        except Exception:  # noqa: BLE001 - Redis failing over: ask again
            pass
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
