"""Client results through the lifetime layer: on one node and across nodes over Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from backplane import (
    ClientDisconnectedError,
    ClientNotFoundError,
    ClientResultError,
    ClientResultFailedError,
    ClientResultTimeoutError,
    ConnectionNotFoundError,
    HubException,
)
from backplane.protocol import CompletionMessage, InvocationMessage
from tests.hub.helpers import Client, make_handler
from tests.lifetime.cluster import Cluster, RedisHub


async def answer(client: Client, reply: object = None, error: str | None = None) -> str:
    """Wait for the client-result invocation, answer it, return its target."""
    (message,) = await client.wait_messages(1)
    assert isinstance(message, InvocationMessage) and message.invocation_id
    if error is not None:
        await client.send(CompletionMessage.with_error(message.invocation_id, error))
    else:
        await client.send(CompletionMessage.with_result(message.invocation_id, reply))
    return message.target


async def test_on_one_node_with_the_memory_manager() -> None:
    handler = make_handler(RedisHub)
    client = Client(handler, "c1", "messagepack")
    await client.handshake()
    proxy = handler.context.clients.client("c1")
    call = asyncio.ensure_future(proxy.invoke("GetAnswer", 1, 2))
    assert await answer(client, 42) == "GetAnswer"
    assert await call == 42
    call = asyncio.ensure_future(proxy.invoke("Fails"))
    await answer(client, error="no way")
    with pytest.raises(ClientResultFailedError, match="no way"):
        await call
    with pytest.raises(ClientResultTimeoutError):
        await proxy.invoke("Silent", timeout=0.05)
    assert [m.target for m in client.messages() if isinstance(m, InvocationMessage)] == ["Silent"]
    with pytest.raises(ClientNotFoundError):
        await handler.context.clients.client("nobody").invoke("X")
    # A client that goes away fails the pending call.
    call = asyncio.ensure_future(proxy.invoke("Pending"))
    await client.wait_messages(1)
    await client.conn.transport_closed()
    with pytest.raises(ClientDisconnectedError, match="Connection disconnected"):
        await call


def test_the_error_family() -> None:
    for error in (
        ClientResultFailedError,
        ClientDisconnectedError,
        ClientResultTimeoutError,
        ClientNotFoundError,
    ):
        assert issubclass(error, ClientResultError)
        assert issubclass(error, HubException)  # the message reaches a calling client as is
    assert issubclass(ClientResultTimeoutError, TimeoutError)
    assert issubclass(ClientNotFoundError, ConnectionNotFoundError)


async def test_the_default_timeout_comes_from_the_options() -> None:
    handler = make_handler(RedisHub, client_result_timeout=0.05)
    client = Client(handler, "c1")
    await client.handshake()
    started = time.monotonic()
    with pytest.raises(ClientResultTimeoutError):
        await handler.context.clients.client("c1").invoke("Silent")
    assert time.monotonic() - started < 1


async def test_across_nodes(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    json_client = await cluster.connect(h2, "j")
    msgpack_client = await cluster.connect(h2, "m", "messagepack")
    for client, value in ((json_client, {"a": [1, 2]}), (msgpack_client, "text")):
        call = asyncio.ensure_future(
            h1.context.clients.client(client.conn.connection_id).invoke("GetAnswer", 7)
        )
        await answer(client, value)
        assert await call == value
    call = asyncio.ensure_future(h1.context.clients.client("j").invoke("Fails"))
    await answer(json_client, error="client said no")
    with pytest.raises(ClientResultFailedError, match="client said no"):
        await call
    # Unknown connection: PUBLISH reaches nobody, so it fails at once.
    started = time.monotonic()
    with pytest.raises(ClientNotFoundError):
        await h1.context.clients.client("nobody").invoke("X")
    assert time.monotonic() - started < 0.5
    # The client disconnects while the other node waits.
    call = asyncio.ensure_future(h1.context.clients.client("m").invoke("Pending"))
    await msgpack_client.wait_messages(1)
    await msgpack_client.conn.transport_closed()
    with pytest.raises(ClientDisconnectedError, match="Connection disconnected"):
        await asyncio.wait_for(call, 2)


async def test_owner_node_dying_fails_the_call(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    client = await cluster.connect(h2, "c")
    call = asyncio.ensure_future(h1.context.clients.client("c").invoke("Pending", timeout=20))
    await client.wait_messages(1)
    # Node 2 freezes: no heartbeats, no answers. Node 1 gives up within the presence timeout.
    beat = cluster.nodes[1]._heartbeat_task
    assert beat is not None
    beat.cancel()
    started = time.monotonic()
    with pytest.raises(ClientDisconnectedError, match="Connection disconnected"):
        await asyncio.wait_for(call, 5)
    assert time.monotonic() - started < 3
