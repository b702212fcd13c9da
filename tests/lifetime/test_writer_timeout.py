"""A Redis that stops answering (SIGSTOP, a half-open socket) never hangs the node: the
writer fails the callers waiting for replies within ``reply_timeout``, keeps the publishes,
and reconnects; the subscriber notices an unanswered PING. A private redis-server each, so
that freezing it disturbs no other test; it is always thawed in a finally.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backplane.redis.bus import BackplaneUnavailable, RedisBus
from backplane.redis.node import RedisNode
from tests.conftest import RedisServer
from tests.lifetime.cluster import wait_until
from tests.lifetime.test_redis_faults import Relay

REPLY = 0.5  # the reply timeout of these tests
# The watchdog looks every tenth of REPLY; the rest is the loop's and the machine's slack.
BOUND = REPLY * 1.1 + 0.4
NEVER = 10.0  # an outer bound on every wait, so a regression fails instead of hanging


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()  # thaws first


@pytest.fixture
async def bus(server: RedisServer) -> AsyncIterator[RedisBus]:
    bus = RedisBus(server.url, reply_timeout=REPLY)
    bus.ping_interval = 0.2
    await bus.start()
    try:
        yield bus
    finally:
        server.thaw()
        await bus.stop()


async def _fails_within(call: asyncio.Future[object], bound: float) -> float:
    """Seconds ``call`` took to raise BackplaneUnavailable; fails when it took over ``bound``."""
    started = time.monotonic()
    with pytest.raises(BackplaneUnavailable):
        await asyncio.wait_for(call, NEVER)
    took = time.monotonic() - started
    assert took < bound, f"failed after {took:.2f} s, beyond {bound:.2f} s"
    return took


async def test_a_frozen_redis_fails_waiting_callers_within_the_reply_timeout(
    server: RedisServer, bus: RedisBus
) -> None:
    assert await bus.query("SET", "k", "v")
    server.freeze()
    try:
        # Both on the wire (or queued behind it) when Redis froze: both hear within the bound.
        query = asyncio.ensure_future(bus.query("GET", "k"))
        counted = asyncio.ensure_future(bus.publish_counted(b"frozen", b"x"))
        took = [await _fails_within(query, BOUND), await _fails_within(counted, BOUND)]
        print(f"with Redis frozen, query and publish_counted failed after {max(took):.2f} s")
        assert not bus.writer_up
        assert "no reply within 0.5 s" in (bus.last_error or "")
        # Reconnecting meets a Redis that accepts connections and answers nothing: each
        # attempt is bounded, the writer stays down, and callers fail at once meanwhile.
        await asyncio.sleep(3 * REPLY)
        assert not bus.writer_up
        await _fails_within(asyncio.ensure_future(bus.query("GET", "k")), 0.1)
        await _fails_within(asyncio.ensure_future(bus.publish_counted(b"frozen", b"x")), 0.1)
    finally:
        server.thaw()
    # Back within a few seconds, and queries work again.
    started = time.monotonic()
    assert await wait_until(lambda: bus.writer_up, 5)
    assert await asyncio.wait_for(bus.query("GET", "k"), NEVER) == b"v"
    print(f"after thawing, the writer was back in {time.monotonic() - started:.2f} s")


async def test_publishes_made_while_frozen_arrive_after_the_thaw(
    server: RedisServer, bus: RedisBus
) -> None:
    listener = RedisBus(server.url, reply_timeout=REPLY)
    listener.ping_interval = 0.2
    got: list[bytes] = []
    await listener.start()
    try:
        await listener.subscribe(b"thaw", lambda _c, data: got.append(data))
        bus.publish(b"thaw", b"before")
        assert await wait_until(lambda: got == [b"before"], 5)
        server.freeze()
        try:
            sent = []
            # Some go out in a batch that Redis never answers, the rest are buffered.
            for i in range(40):
                sent.append(b"%d" % i)
                bus.publish(b"thaw", sent[-1])
                await asyncio.sleep(0.02)
            assert await wait_until(lambda: not bus.writer_up, BOUND)
            # The listener's PING goes unanswered: it is down too, and says so.
            assert await wait_until(lambda: not listener.connected, 0.2 + BOUND)
            for i in range(40, 50):
                sent.append(b"%d" % i)
                bus.publish(b"thaw", sent[-1])
        finally:
            server.thaw()
        assert await wait_until(lambda: set(sent) <= set(got), NEVER), sorted(set(sent) - set(got))
        assert bus.stats.dropped == 0
        # Order holds; a batch Redis ran before freezing may come again (at least once).
        firsts = [data for i, data in enumerate(got) if data not in got[:i]]
        assert firsts == [b"before", *sent]
        print(f"frozen: {len(sent)} publishes, {len(got) - 1 - len(sent)} delivered twice")
    finally:
        await listener.stop()


async def test_the_heartbeat_is_not_stalled_by_a_frozen_redis(server: RedisServer) -> None:
    node = RedisNode(server.url, heartbeat=0.2, timeout=1.0)
    node.bus.reply_timeout = REPLY
    await node.start()
    try:
        await node.beat()
        server.freeze()
        try:
            await _fails_within(asyncio.ensure_future(node.beat()), BOUND)
            await _fails_within(asyncio.ensure_future(node.beat()), 0.1)  # down: at once
        finally:
            server.thaw()
        # The heartbeat task went on beating: the node is live again soon after.
        assert await wait_until(lambda: node.bus.writer_up, 5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and node.node_id not in await node.live_nodes():
            await asyncio.sleep(0.05)
        assert node.node_id in await node.live_nodes()
    finally:
        server.thaw()
        await node.stop()


async def test_a_silent_writer_socket_is_replaced(server: RedisServer) -> None:
    """A half-open connection (a dead NAT entry) answers nothing while Redis is fine: the
    query on it fails within the bound, and the writer's next connection serves."""
    relay = await Relay(server.port).start()
    bus = RedisBus(relay.url, reply_timeout=REPLY)
    try:
        await bus.start()
        assert await bus.query("SET", "k", "v")
        relay.silence_existing()
        await _fails_within(asyncio.ensure_future(bus.query("GET", "k")), BOUND)
        assert await wait_until(lambda: bus.writer_up, 5)
        assert await asyncio.wait_for(bus.query("GET", "k"), NEVER) == b"v"
        assert bus.stats.reconnects >= 1
    finally:
        await bus.stop()
        await relay.close()


def test_the_reply_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="reply_timeout"):
        RedisBus("redis://127.0.0.1:1/0", reply_timeout=0)
