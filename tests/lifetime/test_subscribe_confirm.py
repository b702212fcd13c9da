"""A SUBSCRIBE that Redis does not confirm in time is a failure, not a success: it is sent again,
the caller waits for the confirmation that counts, and gives up with an error in the end. A
private redis-server, frozen (SIGSTOP) for a moment so the subscriber's connection stays up
but unanswered; always thawed in a finally."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from backplane.redis.bus import BackplaneUnavailable, RedisBus
from tests.conftest import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()  # thaws first


async def _bus(url: str) -> RedisBus:
    bus = RedisBus(url, reply_timeout=30.0)  # the freeze must not end the connection
    bus.ping_interval = 30.0
    bus.confirm_timeout = 0.2
    await bus.start()
    return bus


async def test_a_late_confirmation_is_retried_and_waited_for(server: RedisServer) -> None:
    bus = await _bus(server.url)
    direct = aioredis.Redis.from_url(server.url)
    try:
        server.freeze()
        thawed_at = 0.0
        try:
            started = time.monotonic()
            call = asyncio.ensure_future(bus.subscribe(b"confirm:late", lambda _c, _d: None))
            await asyncio.sleep(0.3)  # past the confirmation timeout: one retry sent
            assert not call.done(), "the subscription counted as confirmed while Redis was frozen"
        finally:
            thawed_at = time.monotonic()
            server.thaw()
        await asyncio.wait_for(call, 5.0)
        took = time.monotonic() - started
        assert time.monotonic() >= thawed_at
        assert bus.stats.resubscribes >= 1
        # Returned: Redis has the subscription.
        assert await direct.publish(b"confirm:late", b"x") == 1
        print(f"late confirmation: waited {took:.2f} s, {bus.stats.resubscribes} resubscribe(s)")
    finally:
        server.thaw()
        await bus.stop()
        await direct.aclose()


async def test_a_confirmation_that_never_comes_fails_the_caller(server: RedisServer) -> None:
    bus = await _bus(server.url)
    try:
        server.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(BackplaneUnavailable, match="did not confirm"):
                await asyncio.wait_for(bus.subscribe(b"confirm:never", lambda _c, _d: None), 5)
            took = time.monotonic() - started
        finally:
            server.thaw()
        assert 0.55 < took < 2.0, took  # three attempts of 0.2 s
        assert bus.stats.resubscribes == 3
    finally:
        await bus.stop()
