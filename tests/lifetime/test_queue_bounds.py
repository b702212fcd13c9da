"""The writer's queue is bounded whether Redis is there or not: a burst (or a Redis slower than
the node) loses the oldest publishes, counted, instead of growing memory; state writes kept
through an outage share the outage buffer's bound. Real Redis servers throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from backplane.redis.bus import RedisBus
from tests.conftest import RedisServer
from tests.lifetime.cluster import wait_until


async def test_a_burst_past_the_queue_limit_keeps_the_newest_and_counts_the_rest(
    redis_server: RedisServer,
) -> None:
    publisher = RedisBus(redis_server.url)
    publisher.queue_limit = 1000
    listener = RedisBus(redis_server.url)
    got: list[bytes] = []
    await publisher.start()
    await listener.start()
    try:
        channel = b"bounds:burst"
        await listener.subscribe(channel, lambda _c, data: got.append(data))
        # 5000 publishes without a pause: the writer cannot run before the last one.
        for i in range(5000):
            publisher.publish(channel, b"%d" % i)
        assert publisher.queued == 1000, publisher.queued
        assert publisher.stats.overflowed == 4000
        assert await wait_until(lambda: len(got) >= 1000, 5.0), len(got)
        await asyncio.sleep(0.05)
        assert got == [b"%d" % i for i in range(4000, 5000)]
        print("burst of 5000 with --redis-queue-limit 1000: queued 1000, dropped 4000")
    finally:
        await publisher.stop()
        await listener.stop()


async def test_kept_state_writes_are_bounded_through_an_outage(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    bus = RedisBus(server.url, buffer_limit=10)
    await bus.start()
    try:
        await asyncio.to_thread(server.stop)
        bus.command("SET", "bounds:nudge", 1)  # the idle writer finds Redis gone by writing
        assert await wait_until(lambda: not bus.writer_up, 5.0)
        for i in range(50):
            bus.command("SET", f"bounds:kept:{i}", i, keep=True)
        assert bus.queued == 10, bus.queued
        assert bus.stats.dropped == 40
        await asyncio.to_thread(server.start)
        assert await wait_until(lambda: bus.writer_up, 10.0)
        assert await bus.flush(5.0)
        kept = await bus.query("MGET", *(f"bounds:kept:{i}" for i in range(50)))
        assert [i for i, v in enumerate(kept) if v is not None] == list(range(40, 50))
    finally:
        await bus.stop()
        server.stop()
