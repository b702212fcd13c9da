"""A client result asked from another node, of a client that never answers, does not stay on
the node holding the client: it is forgotten a moment after the hub's client result timeout,
and the asking node is told. Real Redis, nodes in this process."""

from __future__ import annotations

import asyncio
import time

import pytest

from backplane import ClientResultError, ClientResultTimeoutError, HubOptions
from backplane.protocol import InvocationMessage
from tests.lifetime.cluster import Cluster, wait_until


async def test_a_forwarded_call_the_client_never_answers_expires_on_the_owner(
    cluster: Cluster,
) -> None:
    owner = await cluster.add_node(HubOptions(client_result_timeout=0.3))
    asker = await cluster.add_node(HubOptions(client_result_timeout=0.3))
    client = await cluster.connect(owner, "silent")
    proxy = asker.context.clients.client("silent")

    # The asking node gives up at its timeout; the owner forgets the call a moment later.
    with pytest.raises(ClientResultTimeoutError):
        await proxy.invoke("Never")
    asked = [m for m in await client.wait_messages(1) if isinstance(m, InvocationMessage)]
    assert asked and asked[0].invocation_id
    assert asked[0].invocation_id in client.conn.results
    started = time.monotonic()
    assert await wait_until(lambda: not client.conn.results, 3.0), client.conn.results
    print(f"forgotten on the owner {time.monotonic() - started:.2f} s after the asker gave up")

    # A caller that waits longer than the owner keeps it hears from the owner instead.
    call = asyncio.ensure_future(proxy.invoke("Never", timeout=10.0))
    started = time.monotonic()
    with pytest.raises(ClientResultError, match="did not answer within 1.3 seconds"):
        await asyncio.wait_for(call, 5.0)
    assert time.monotonic() - started < 3.0
    assert not client.conn.results
    assert not client.conn.closing
