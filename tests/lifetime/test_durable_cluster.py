"""--durable-resume on a Redis Cluster (three masters), with sharded and with classic pub/sub.

The tests of ``test_durable.py`` run again on the session's Redis Cluster (``redis_cluster``):
a node's records go in one script call per hash slot, a channel's history lives on the
channel's shard (its name starts with the tag of the channel's slot, so the history publish
SPUBLISHes from there), and the node taking up a dead node's connection reads each key on its
shard. Not here: the test that freezes the one Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.lifetime.cluster import Cluster
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
