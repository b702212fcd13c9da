"""A node whose Redis connections close is found dead within about two seconds, long before
its heartbeat times out; the guards that keep live nodes from being purged hold.

In-process RedisNodes on the session's Redis (private prefixes). A node "dies" by losing its
heartbeat, its watcher and both Redis connections without the clean leave, as a SIGKILLed
process does; the end-to-end tests (tests/e2e/test_dead_node.py) kill real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backplane import ClientDisconnectedError, HubConnectionHandler, HubOptions
from backplane.redis.liveness import DeadNodes, DeathRule, PurgeGuard, recent_ms
from backplane.redis.node import RedisNode
from tests.conftest import RedisServer
from tests.hub.helpers import Client
from tests.lifetime.cluster import HUB, RedisHub, wait_until

#: Long enough that the heartbeat cannot be what finds the dead node in these tests.
LONG_TIMEOUT = 30.0


class Nodes:
    """RedisNodes with one hub each, under a private prefix; closed at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"dead{uuid.uuid4().hex[:8]}:"
        self.nodes: list[RedisNode] = []
        self.handlers: list[HubConnectionHandler] = []
        self.clients: list[Client] = []

    async def add(self, heartbeat: float = 0.5, timeout: float = LONG_TIMEOUT) -> RedisNode:
        node = RedisNode(self.url, channel_prefix=self.prefix, heartbeat=heartbeat, timeout=timeout)
        manager = node.manager(HUB, ("json",))
        self.handlers.append(HubConnectionHandler(RedisHub, HubOptions(), manager))
        await manager.start()
        self.nodes.append(node)
        return node

    def handler(self, node: RedisNode) -> HubConnectionHandler:
        return self.handlers[self.nodes.index(node)]

    async def connect(self, node: RedisNode, cid: str) -> Client:
        client = Client(self.handler(node), cid)
        await client.handshake()
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.conn.transport_closed()
        for handler in self.handlers:
            with contextlib.suppress(Exception):
                await handler.lifetime.stop()


async def kill(node: RedisNode) -> None:
    """Stop a node as SIGKILL would: no heartbeat, no leave, its connections just close."""
    for task in (node._heartbeat_task, node._watch_task):
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    node._started = False  # nothing left for its stop() to do: no clean leave
    await node.bus.stop()


@pytest.fixture
async def nodes(redis_server: Any) -> AsyncIterator[Nodes]:
    group = Nodes(redis_server.url)
    try:
        yield group
    finally:
        await group.close()


async def connections(node: RedisNode) -> set[str]:
    raw = await node.bus.query("HKEYS", node.managers[0].keys.conns)
    return {c.decode() for c in raw}


async def test_a_node_whose_connections_close_is_dead_within_two_seconds(nodes: Nodes) -> None:
    a, b, c = await nodes.add(), await nodes.add(), await nodes.add()
    await nodes.connect(a, "on-a")
    target = await nodes.connect(b, "on-b")
    # Calls from two nodes wait for the client on b: one node purges b, the other hears of it.
    calls = [
        asyncio.ensure_future(nodes.handler(n).context.clients.client("on-b").invoke("Never"))
        for n in (a, c)
    ]
    assert len(await target.wait_messages(2)) == 2  # both asked, neither will be answered
    await asyncio.sleep(0.6)  # the watchers have seen b's channel subscribed
    assert await connections(a) == {"on-a", "on-b"}

    killed = time.monotonic()
    await kill(b)
    for call in calls:
        with pytest.raises(ClientDisconnectedError, match="Connection disconnected"):
            await asyncio.wait_for(call, 5)
    failed = time.monotonic() - killed
    assert await wait_until(lambda: a.is_dead(b.node_id) and c.is_dead(b.node_id), 1)
    cleaned = time.monotonic() - killed
    assert await connections(a) == {"on-a"}
    print(f"client results failed after {failed:.2f} s, presence clean after {cleaned:.2f} s")
    assert failed < 2.0
    detections = [n.dead_nodes for n in (a, c)]
    assert sorted(d["connection"] for d in detections) == [0, 1], detections
    assert all(d["heartbeat"] == 0 for d in detections), detections
    assert b.node_id not in await a.live_nodes()
    # New calls to a client of the dead node fail at once (nobody holds its channel).
    with pytest.raises(Exception, match="does not exist"):
        await nodes.handler(a).context.clients.client("on-b").invoke("Never", timeout=5)


async def test_an_observer_that_never_saw_a_node_subscribed_leaves_it_to_the_heartbeat(
    nodes: Nodes,
) -> None:
    # b dies before the observer connects: its channel's 0 says nothing the observer can
    # compare (as after a Redis restart, when every count starts at 0).
    b = await nodes.add(heartbeat=0.25, timeout=2.0)
    await nodes.connect(b, "on-b")
    await kill(b)
    observer = await nodes.add(heartbeat=0.25, timeout=2.0)
    started = time.monotonic()
    await asyncio.sleep(1.0)
    assert observer.dead_nodes == {"connection": 0, "heartbeat": 0}
    assert b.node_id.encode() in await observer.bus.query("ZRANGE", observer.nodes_key, 0, -1)
    assert await wait_until(lambda: observer.dead_nodes["heartbeat"] == 1, 3)
    assert observer.dead_nodes["connection"] == 0
    assert observer.is_dead(b.node_id)
    assert time.monotonic() - started > 1.0
    assert await connections(observer) == set()


async def test_a_node_whose_heartbeat_goes_on_is_not_dead(nodes: Nodes) -> None:
    a, b = await nodes.add(heartbeat=0.2), await nodes.add(heartbeat=0.2)
    await asyncio.sleep(0.3)
    # b's subscriber connection is gone for good (as if Redis had dropped it and it could
    # not come back): its channel counts 0 at many checks, but its writer still heartbeats.
    subscriber = b.bus._subscriber
    subscriber.cancel()
    await subscriber.stopped()
    await subscriber.close()
    await asyncio.sleep(1.5)
    assert a.dead_nodes == {"connection": 0, "heartbeat": 0}
    assert b.node_id in await a.live_nodes()
    assert not a.is_dead(b.node_id)


async def test_a_stalled_redis_gets_no_live_node_purged(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    nodes = Nodes(server.url)
    try:
        a = await nodes.add(heartbeat=0.25, timeout=1.0)
        b = await nodes.add(heartbeat=0.25, timeout=1.0)
        await nodes.connect(a, "on-a")
        await nodes.connect(b, "on-b")
        await asyncio.sleep(0.5)
        # Redis stalls for twice the timeout. When it resumes, b's beat comes a little after
        # a's (as when b's writer had another command on the wire, its heartbeat queued behind
        # it): to a, b looks silent for longer than the timeout, though it is alive.
        beating = b._heartbeat_task
        assert beating is not None
        beating.cancel()
        server.freeze()
        await asyncio.sleep(2.0)
        server.thaw()
        await asyncio.sleep(0.3)
        b._heartbeat_task = asyncio.get_running_loop().create_task(b._heartbeat_forever())
        await asyncio.sleep(1.5)
        assert a.purged_nodes == 0 and b.purged_nodes == 0
        assert a.reregistrations == 0 and b.reregistrations == 0
        assert await connections(a) == {"on-a", "on-b"}
        assert set(await a.live_nodes()) == {a.node_id, b.node_id}
    finally:
        server.thaw()
        await nodes.close()
        server.stop()


# -- the rules, without Redis --------------------------------------------------------------


def test_the_rule_needs_two_zero_counts_a_stale_heartbeat_and_a_count_seen_before() -> None:
    rule = DeathRule(heartbeat=1.0, timeout=30.0)
    assert rule.judge(10_000, [("b", 10_000, 0)], "a") == []  # no run_id yet
    rule.redis_is("run-1")
    assert rule.judge(10_000, [("b", 9_000, 0)], "a") == []  # never seen subscribed
    assert rule.judge(10_250, [("b", 9_000, 1)], "a") == []  # seen
    assert rule.judge(10_500, [("b", 9_000, 0)], "a") == []  # one zero
    assert rule.judge(10_750, [("b", 10_000, 0)], "a") == []  # heartbeat fresh (0.75 s)
    assert rule.judge(11_500, [("b", 10_000, 0)], "a") == ["b"]  # 1.5 s old, zeros in a row
    # A node silent for longer than the timeout is the heartbeat's to purge.
    assert rule.judge(50_000, [("b", 10_000, 0)], "a") == []
    # A reconnect to the same server keeps what was seen, but the zeros start again.
    rule.redis_is("run-1")
    assert rule.judge(11_750, [("b", 10_000, 0)], "a") == []
    assert rule.judge(12_000, [("b", 10_000, 0)], "a") == ["b"]
    # Another server (restart, failover): nothing seen there yet.
    rule.redis_is("run-2")
    for now in (12_250, 12_500, 12_750):
        assert rule.judge(now, [("b", 10_000, 0)], "a") == []
    # Gone from the set (purged or left): forgotten.
    assert rule.judge(13_000, [("b", 13_000, 1)], "a") == []
    assert rule.judge(13_250, [], "a") == []
    assert rule.judge(13_500, [("b", 12_000, 0)], "a") == []
    # A node never seen subscribed (one of an earlier release, which has no such channel)
    # is left to its heartbeat, however long this observer has known the server.
    for now in (42_250, 42_500, 42_750, 60_000):
        assert rule.judge(now, [("c", 41_000, 0)], "a") == []


def test_the_guard_holds_purges_after_a_stall_or_a_reconnect() -> None:
    guard = PurgeGuard(recent_ms(heartbeat=1.0, timeout=5.0), hold_ms=5_000)
    assert guard.recent_ms == 2_500
    assert guard.allows(100_000, 99_000)
    assert not guard.allows(104_000, 99_000)  # our own beat is 5 s old: Redis stalled
    assert not guard.allows(105_000, 104_000)  # ... so nobody is purged for a timeout
    assert guard.allows(109_001, 108_500)
    assert not guard.allows(110_000, None)  # we were missing ourselves
    assert guard.allows(115_001, 114_500)
    guard.reconnected()
    assert not guard.allows(116_000, 115_500)
    assert guard.allows(121_001, 120_500)
    # A heartbeat interval close to the timeout still leaves room for one beat.
    assert recent_ms(heartbeat=1.0, timeout=1.2) == 1_200


def test_dead_nodes_tell_their_listeners_once() -> None:
    deaths = DeadNodes(keep=60)
    heard: list[str] = []
    deaths.listen(heard.append)
    assert deaths.declare("b") and not deaths.declare("b")
    assert "b" in deaths and heard == ["b"]
    deaths.revive("b")
    assert "b" not in deaths
