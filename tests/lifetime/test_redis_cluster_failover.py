"""A Redis Cluster master killed under traffic: its replica takes over, nothing is lost or twice.

A cluster of its own (three masters, three replicas, a short node timeout: a failover takes
a second or two). One node publishes numbered messages to groups whose channels live on
every shard, at a steady rate; a member on another node counts what arrives. The master of
one of those channels is killed (SIGKILL) mid-stream. Meanwhile the publishing node keeps
its publishes (the outage buffer) and sends them once its writer has the new map; the
receiving node moves its subscriptions to the promoted replica; the receivers drop the
duplicates a resent batch may carry (the publisher's sequence numbers). The test counts
lost and duplicated messages: both must be 0.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from backplane.protocol import InvocationMessage
from backplane.redis.slots import key_slot
from tests.lifetime.cluster import HUB, Cluster
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
    slot = key_slot(channel)
    client = cluster.client(cluster.live_ports()[0])
    try:
        for row in client.execute_command("CLUSTER", "SLOTS"):
            if row[0] <= slot <= row[1]:
                return int(row[2][1])
    finally:
        client.close()
    raise AssertionError(f"no master serves slot {slot}")


async def test_a_master_killed_under_traffic_loses_nothing(
    replicated_cluster: RedisCluster,
) -> None:
    cluster = Cluster(replicated_cluster.url)
    try:
        sender = await cluster.add_node()
        receiver = await cluster.add_node()
        member = await cluster.connect(receiver, "member")
        groups = [f"g{i}" for i in range(GROUPS)]
        for group in groups:
            await receiver.context.groups.add("member", group)
        channels = {g: f"{cluster.prefix}{HUB}:group:{g}".encode() for g in groups}
        owners = {g: _owner(replicated_cluster, channels[g]) for g in groups}
        assert len(set(owners.values())) > 1, owners  # the groups span several shards
        victim = Counter(owners.values()).most_common(1)[0][0]

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
            f"\nfailover: {sent} sent, {lost} lost, {duplicated} duplicated; "
            f"longest silence {silence:.2f} s; "
            f"sender buffered {bus.stats.buffered}, dropped {bus.stats.dropped}; "
            f"receiver gaps {cluster.nodes[1].received.stats.gaps}, "
            f"duplicates dropped {cluster.nodes[1].received.stats.duplicates}"
        )
        assert (lost, duplicated) == (0, 0)
        # The promoted replica serves the victim's channels now.
        new_owners = {g: _owner(replicated_cluster, channels[g]) for g in groups}
        assert victim not in new_owners.values()
    finally:
        await cluster.close()
