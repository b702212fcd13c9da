"""A group join past ``max_groups_per_connection`` is refused on every path: locally, from
another node (the owner acks with the reason over Redis), and from an Emitter; the REST API
answers 409. Real Redis, nodes in this process; the REST API on a real in-memory server."""

from __future__ import annotations

import pytest

from backplane import Emitter, HubOptions, LimitExceededError
from tests.lifetime.cluster import HUB, Cluster
from tests.server.test_rest import one_node


async def test_a_join_past_the_limit_is_refused_from_any_node_and_an_emitter(
    cluster: Cluster,
) -> None:
    h1 = await cluster.add_node(HubOptions(max_groups_per_connection=2))
    h2 = await cluster.add_node()
    client = await cluster.connect(h1, "c")
    await h2.context.groups.add("c", "g1")  # from the other node: acked
    await h1.context.groups.add("c", "g2")
    with pytest.raises(LimitExceededError, match=r"--max-groups-per-connection \(2\)"):
        await h1.context.groups.add("c", "g3")
    with pytest.raises(LimitExceededError, match=r"--max-groups-per-connection \(2\)"):
        await h2.context.groups.add("c", "g3")  # refused by the owner, over Redis
    emitter = Emitter(cluster.url, hub=HUB, channel_prefix=cluster.prefix)
    try:
        with pytest.raises(LimitExceededError, match="cannot join 'g4'"):
            await emitter.groups.add("c", "g4")
    finally:
        await emitter.aclose()
    assert set(client.conn.groups) == {"g1", "g2"}
    assert sorted(await h2.context.presence.groups_of("c")) == ["g1", "g2"]
    assert not client.conn.closing


async def test_rest_answers_409_past_the_limit() -> None:
    async with one_node(max_groups_per_connection=1) as node:
        ws, cid = await node.client("ann")
        assert (await node.call("PUT", f"groups/a/connections/{cid}")).status_code == 200
        refused = await node.call("PUT", f"groups/b/connections/{cid}")
        assert refused.status_code == 409, refused.text
        assert "--max-groups-per-connection (1)" in refused.json()["error"]
        user = await node.call("PUT", "users/ann/groups/c", params={"ttl": "0"})
        assert user.status_code == 409
        # The connection is still there and in its one group.
        listed = await node.call("GET", "groups/a/connections")
        assert [v["connectionId"] for v in listed.json()["value"]] == [cid]
        assert (await node.call("HEAD", f"connections/{cid}")).status_code == 200
        assert (await node.call("HEAD", "groups/b")).status_code == 404
        await ws.close()
