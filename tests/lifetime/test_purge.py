"""A dead node's presence entries go in bounded steps: no single Redis command of the purge
blocks Redis for long, however large the node, and nothing of it is left behind. A private
redis-server (its slow log is configured here) and a real surviving node."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis

from backplane.redis.keys import PresenceKeys, node_key, nodes_key
from backplane.redis.node import RedisNode
from tests.conftest import RedisServer
from tests.lifetime.cluster import wait_until

HUB = "Tests.PurgeHub"
CONNECTIONS = 20_000
SLOW_US = 50_000  # one script purging this node took 233 ms; a step takes well under 1 ms
# (a loaded test machine can stall the Redis process for 10-15 ms under any command)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def seed_dead_node(client: aioredis.Redis, prefix: bytes, node: str, count: int) -> None:
    """A node that died with ``count`` connections, each with a user and two groups."""
    hub = PresenceKeys(prefix + HUB.encode())
    seconds, micros = await client.time()
    beat = seconds * 1000 + micros // 1000 - 60_000  # a minute silent
    await client.zadd(nodes_key(prefix), {node: beat})
    hubs = msgpack.packb([hub.base], use_bin_type=False)
    await client.hset(node_key(prefix, node), mapping={"id": node, "hubs": hubs})
    for start in range(0, count, 2000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 2000, count)):
            cid, user = f"c{i}", f"u{i % 500}"
            groups = (f"g{i % 50}", f"room{i % 7}")
            pipe.hset(hub.conns, cid, msgpack.packb([node, user]))
            pipe.sadd(hub.node(node), cid)
            pipe.sadd(hub.user(user), cid)
            pipe.sadd(hub.groups_of(cid), *groups)
            for g in groups:
                pipe.sadd(hub.group(g), cid)
        await pipe.execute()


async def test_a_large_dead_node_is_purged_in_short_steps(server: RedisServer) -> None:
    prefix = f"p{uuid.uuid4().hex[:6]}:".encode()
    client = aioredis.Redis.from_url(server.url)
    survivor = RedisNode(server.url, channel_prefix=prefix, heartbeat=0.2, timeout=1.0)
    manager = survivor.manager(HUB, ("json",))
    try:
        await seed_dead_node(client, prefix, "dead", CONNECTIONS)
        await client.config_set("slowlog-log-slower-than", 1000)  # 1 ms and longer
        await client.config_set("slowlog-max-len", 10_000)
        await client.slowlog_reset()
        started = time.monotonic()
        await manager.start()
        assert await wait_until(lambda: survivor.dead_nodes["heartbeat"] == 1, 20.0)
        took = time.monotonic() - started
        slow = await client.slowlog_get(10_000)
        longest = max((entry["duration"] for entry in slow), default=0)
        worst = [(e["duration"], e["command"][:40]) for e in slow if e["duration"] >= SLOW_US]
        assert not worst, worst
        # Nothing of the dead node is left.
        leftover = [k async for k in client.scan_iter(match=prefix + b"*", count=1000)]
        assert sorted(leftover) == sorted(
            [nodes_key(prefix), node_key(prefix, survivor.node_id)]
        ), leftover[:10]
        assert await client.zscore(nodes_key(prefix), "dead") is None
        print(
            f"purged {CONNECTIONS} connections in {took:.2f} s (detection included); "
            f"longest Redis command {longest / 1000:.2f} ms, "
            f"{len(slow)} commands of 1 ms or more (one Lua call took 233 ms for this node)"
        )
    finally:
        await manager.stop()
        await client.aclose()


async def test_two_survivors_purge_a_dead_node_once(server: RedisServer) -> None:
    prefix = f"p{uuid.uuid4().hex[:6]}:".encode()
    client = aioredis.Redis.from_url(server.url)
    nodes = [
        RedisNode(server.url, channel_prefix=prefix, heartbeat=0.2, timeout=1.0) for _ in range(2)
    ]
    managers = [n.manager(HUB, ("json",)) for n in nodes]
    try:
        await seed_dead_node(client, prefix, "dead", 3000)
        await asyncio.gather(*(m.start() for m in managers))
        assert await wait_until(lambda: sum(n.dead_nodes["heartbeat"] for n in nodes) >= 1, 20)
        await asyncio.sleep(1.0)  # a second purge, if there were one, would have counted
        assert sum(n.dead_nodes["heartbeat"] for n in nodes) == 1
        assert not await client.exists(PresenceKeys(prefix + HUB.encode()).conns)
    finally:
        for m in managers:
            await m.stop()
        await client.aclose()
