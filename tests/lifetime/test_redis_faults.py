"""Faults around one node's Redis connections: silent sockets, outages with leavers,
racing starts and subscriptions. Real redis-servers; a small TCP relay simulates the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from backplane import Emitter
from backplane.redis.bus import RedisBus
from tests.conftest import RedisServer
from tests.lifetime.cluster import HUB, Cluster, targets, wait_until


class Relay:
    """A loopback TCP relay to Redis whose existing connections can go silent at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silenced: list[asyncio.Event] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        silent = asyncio.Event()
        self.silenced.append(silent)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst, silent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, silent: asyncio.Event
    ) -> None:
        with contextlib.suppress(Exception):
            while True:
                data = await src.read(65536)
                if not data or silent.is_set():
                    # Silenced: swallow everything, never close (a dead NAT entry).
                    if silent.is_set():
                        await asyncio.sleep(3600)
                    break
                dst.write(data)
                await dst.drain()
        dst.close()

    def silence_existing(self) -> None:
        for event in self.silenced:
            event.set()
        self.silenced = []

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()


async def test_a_silently_dead_subscriber_socket_is_noticed(redis_server: Any) -> None:
    relay = await Relay(redis_server.port).start()
    bus = RedisBus(relay.url)
    bus.ping_interval = 0.2
    got: list[bytes] = []
    direct = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.start()
        await bus.subscribe(b"faults:silent", lambda _c, d: got.append(d))
        assert await direct.publish(b"faults:silent", b"before") == 1
        assert await wait_until(lambda: got == [b"before"], 2)
        relay.silence_existing()
        # Within three ping intervals the node gives up on the socket and subscribes anew.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"after" not in got:
            await direct.publish(b"faults:silent", b"after")
            await asyncio.sleep(0.1)
        assert b"after" in got
        assert bus.stats.reconnects >= 1
    finally:
        await bus.stop()
        await direct.aclose()
        await relay.close()


async def test_leavers_during_an_outage_leave_no_ghosts(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    cluster = Cluster(server.url)
    try:
        h1, h2 = await cluster.add_node(), await cluster.add_node()
        await cluster.connect(h1, "stays", user="ann")
        leaver = await cluster.connect(h1, "leaves", user="bob")
        await h1.context.groups.add("leaves", "g")
        await h1.context.groups.add("stays", "h")
        await asyncio.to_thread(server.stop)
        bus1 = cluster.nodes[0].bus
        assert await wait_until(lambda: not bus1.connected, 5)
        await leaver.conn.transport_closed()
        await h1.context.groups.remove("stays", "h")
        # Redis comes back with the data it had (as after a network cut, not a restart).
        await asyncio.to_thread(server.start)
        bus2 = cluster.nodes[1].bus  # it answers the presence queries below
        assert await wait_until(lambda: bus1.connected and bus2.connected, 10)
        presence = h2.context.presence
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "leaves" in await presence.connections():
            await asyncio.sleep(0.05)
        assert await presence.connections() == ["stays"]
        assert await presence.group_members("g") == []
        assert await presence.group_members("h") == []
        assert not await presence.is_user_online("bob")
        assert await presence.is_user_online("ann")
    finally:
        await cluster.close()
        server.stop()


async def test_a_new_emitter_serves_concurrent_first_calls(cluster: Cluster) -> None:
    h1 = await cluster.add_node()
    client = await cluster.connect(h1, "c")
    emitter = Emitter(cluster.url, hub=HUB, channel_prefix=cluster.prefix)
    try:
        await asyncio.gather(*(emitter.clients.all.send("Hi", i) for i in range(5)))
    finally:
        await emitter.aclose()
    got = targets(await client.wait_messages(5))
    assert sorted(args[0] for _, args in got) == [0, 1, 2, 3, 4]


async def test_a_second_subscriber_waits_for_the_confirmation(redis_server: Any) -> None:
    bus = RedisBus(redis_server.url)
    direct = aioredis.Redis.from_url(redis_server.url)
    try:
        await bus.start()
        first = asyncio.ensure_future(bus.subscribe(b"faults:twice", lambda _c, _d: None))
        await asyncio.sleep(0)
        await bus.subscribe(b"faults:twice", lambda _c, _d: None)
        # When the second call returns, Redis has the subscription.
        assert await direct.publish(b"faults:twice", b"x") == 1
        await first
    finally:
        await bus.stop()
        await direct.aclose()


async def test_flush_waits_for_the_batch_on_the_wire(redis_server: Any) -> None:
    """flush() returns once Redis answered every publish, not once the queue is empty: the
    last batch is still on the wire then. stop() flushes, and everything arrives."""
    channel = f"hubplane-test-flush-{time.monotonic_ns()}".encode()
    listener = RedisBus(redis_server.url)
    got: list[bytes] = []
    await listener.start()
    await listener.subscribe(channel, lambda _channel, data: got.append(data))
    count = 20_000
    pad = b"x" * 500
    bus = RedisBus(redis_server.url)
    bus.publish_script = False  # one PUBLISH each: a long batch of replies to read
    try:
        await bus.start()
        for i in range(count):
            bus.publish(channel, b"%d:" % i + pad)
        deadline = time.monotonic() + 10
        while bus.queued and time.monotonic() < deadline:
            await asyncio.sleep(0)  # until the writer took the last batch
        assert bus.queued == 0
        assert bus.stats.published < count  # that batch is sent, its replies not yet read
        assert await bus.flush(10.0)
        assert bus.stats.published == count  # read right after flush(), with no other wait
        for i in range(100):
            bus.publish(channel, b"%d:" % (count + i) + pad)
        await bus.stop()
        assert bus.stats.published == count + 100
        assert await wait_until(lambda: len(got) >= count + 100, 10)
        assert len(got) == count + 100
        assert got[-1] == b"%d:" % (count + 99) + pad
    finally:
        await bus.stop()
        await listener.stop()
