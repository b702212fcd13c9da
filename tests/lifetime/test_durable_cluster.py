"""--durable-resume on a Redis Cluster (three masters), with sharded and with classic pub/sub.

The tests of ``test_durable.py`` run again on the session's Redis Cluster (``redis_cluster``):
a node's records go in one script call per hash slot, a channel's history lives on the
channel's shard (its name starts with the tag of the channel's slot, so the history publish
SPUBLISHes from there), and the node taking up a dead node's connection reads each key on its
shard. Not here: the test that freezes the one Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backplane.redis.keys import resume_key
from backplane.redis.slots import key_slot
from tests.lifetime.cluster import Cluster, wait_until
from tests.lifetime.durable import PATH, Client, add_node, close, crash, publish
from tests.lifetime.test_durable import (  # run again on the Redis Cluster
    test_a_crashed_nodes_connection_is_taken_up_with_every_message_once,
    test_a_live_handover_of_a_durable_connection_loses_nothing,
    test_a_resume_that_could_miss_something_is_refused,
)

__all__ = [
    "test_a_crashed_nodes_connection_is_taken_up_with_every_message_once",
    "test_a_live_handover_of_a_durable_connection_loses_nothing",
    "test_a_resume_that_could_miss_something_is_refused",
]


@pytest.fixture(params=["sharded", "classic"])
async def cluster(request: pytest.FixtureRequest, redis_cluster: Any) -> AsyncIterator[Cluster]:
    """In-process nodes on the session's Redis Cluster, under a private prefix."""
    c = Cluster(redis_cluster.url, pubsub=request.param)
    try:
        yield c
    finally:
        await c.close()


async def test_a_crashed_nodes_connections_on_many_slots_are_all_taken_up(
    cluster: Cluster,
) -> None:
    """Six durable connections (their records on several slots, so several RECORD calls a
    turn) on a node that crashes: each is taken up elsewhere with every message once."""
    holder, taker, other = [await add_node(cluster) for _ in range(3)]
    nodes = [holder, taker, other]
    try:
        connections = [await holder.connect() for _ in range(6)]
        prefix = cluster.prefix.encode()
        slots = {key_slot(resume_key(prefix, record.token)) for record, _ in connections}
        assert len(slots) > 1
        for record, _ in connections:
            await holder.handler.context.groups.add(record.connection_id, "room")
        group = cluster.lifetime(holder.handler).channels.group("room")
        assert await wait_until(lambda: all(group in n.history for n in nodes), 2.0)
        clients = [Client() for _ in connections]
        sent: list[tuple[str, int]] = []
        traffic = asyncio.ensure_future(publish("other", other, 120, sent))
        for _ in range(25):
            await asyncio.sleep(0.004)
            for client, (_, connection) in zip(clients, connections, strict=True):
                client.read(connection)
        await crash(holder)
        assert all(client.last > 5 for client in clients)
        taken = []
        for record, _ in connections:
            result = await taker.handover.take_up(record.token, PATH, None, {}, {})
            assert not isinstance(result, int), f"refused: {result}"
            assert result[0].revived
            result[1].resume()
            taken.append(result[1])
        await traffic

        def complete() -> bool:
            for client, connection in zip(clients, taken, strict=True):
                client.read(connection)
            return all(len(c.invocations()) >= 120 for c in clients)

        assert await wait_until(complete, 5.0)
        for client in clients:
            assert [i for _, i in client.invocations()] == list(range(1, 121))
        recorder = taker.handover.recorder
        assert recorder is not None and all(recorder.recording(c) for c in taken)
    finally:
        await close(nodes)
