"""A Redis outage under two in-process nodes: local traffic goes on, publishes are kept up to
a bound and flushed after the restart, presence is rebuilt, and drops are counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import RedisServer
from tests.lifetime.cluster import Cluster, targets, wait_until


async def test_outage_keeps_local_traffic_buffers_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    cluster = Cluster(server.url)
    try:
        h1, h2 = await cluster.add_node(buffer_limit=15), await cluster.add_node()
        a = await cluster.connect(h1, "a", user="ann")
        b = await cluster.connect(h2, "b", "messagepack")
        await h1.context.groups.add("a", "g")
        await h1.context.groups.add("b", "g")
        await h1.context.clients.group("g").send("Before")
        assert targets(await b.wait_messages(1)) == [("Before", [])]
        assert targets(a.messages()) == [("Before", [])]

        await asyncio.to_thread(server.stop)
        bus1, bus2 = cluster.nodes[0].bus, cluster.nodes[1].bus
        assert await wait_until(lambda: not bus1.connected and not bus2.connected, 5)

        # Local clients are served as before; 20 publishes exceed the bound of 15.
        for i in range(20):
            await h1.context.clients.group("g").send("During", i)
        assert targets(a.messages()) == [("During", [i]) for i in range(20)]
        assert bus1.stats.buffered == 20
        assert bus1.stats.dropped == 5
        assert not a.conn.closing and not b.conn.closing

        await asyncio.to_thread(server.start)
        assert await wait_until(lambda: bus1.connected and bus2.connected, 10)
        # The 15 newest buffered messages arrive, in order, after the flush delay.
        got = targets(await b.wait_messages(15, timeout=6))
        assert got == [("During", [i]) for i in range(5, 20)]
        await h2.context.clients.group("g").send("After")
        assert targets(await a.wait_messages(1)) == [("After", [])]
        assert targets(await b.wait_messages(1)) == [("After", [])]
        # Presence is whole again although Redis came back empty.
        presence = h2.context.presence
        assert sorted(await presence.connections()) == ["a", "b"]
        assert sorted(await presence.group_members("g")) == ["a", "b"]
        assert await presence.is_user_online("ann")
        assert len(await presence.nodes()) == 2
        print(
            f"outage: sent 20 during it, delivered {len(got)} after, "
            f"dropped {bus1.stats.dropped} (buffer 15), reconnects {bus1.stats.reconnects}"
        )
    finally:
        await cluster.close()
        server.stop()
