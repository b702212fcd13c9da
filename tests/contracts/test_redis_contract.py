"""redis-py's connection internals, as the Redis bus drives them.

The bus (backplane/redis/connect.py, writer.py, subscriber.py) takes a connection from
``ConnectionPool.make_connection()``, keeps it out of the pool, writes hiredis-packed batches
with ``send_packed_command(..., check_health=False)``, reads replies one by one with
``read_response()`` (an error reply raised as ``ResponseError``), subscribes with
``send_command``, applies ``Redis.response_callbacks`` to query replies and ends with
``disconnect(nowait=True)``. Each test names the internal it checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from backplane.redis import connect, writer

TIMEOUT = 5.0


def contract(internal: str, used_by: str) -> str:
    return (
        f"redis-py {redis.__version__}: {internal} no longer behaves as {used_by} "
        "(backplane/redis/connect.py, writer.py, subscriber.py) relies on; "
        "see tests/contracts/README.md"
    )


@pytest.fixture
async def client(redis_server: Any) -> AsyncIterator[Any]:
    c = connect.connect_redis(redis_server.url)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def connection(client: Any) -> AsyncIterator[AbstractConnection]:
    assert hasattr(client.connection_pool, "make_connection"), contract(
        "ConnectionPool.make_connection()", "open_connection"
    )
    conn = await asyncio.wait_for(connect.open_connection(client), TIMEOUT)
    try:
        yield conn
    finally:
        await connect.close_connection(conn)


async def test_make_connection_gives_a_connection_kept_out_of_the_pool(client: Any) -> None:
    conn = await asyncio.wait_for(connect.open_connection(client), TIMEOUT)
    try:
        assert isinstance(conn, AbstractConnection), contract(
            "ConnectionPool.make_connection()", "open_connection"
        )
        assert conn.is_connected, contract("AbstractConnection.connect()", "open_connection")
        pool = client.connection_pool
        in_use = getattr(pool, "_in_use_connections", set())
        assert conn not in in_use, contract(
            "make_connection() (outside the pool)", "open_connection"
        )
    finally:
        await asyncio.wait_for(connect.close_connection(conn), TIMEOUT)
    assert not conn.is_connected, contract(
        "AbstractConnection.disconnect(nowait=True)", "close_connection"
    )


async def test_a_packed_batch_is_answered_reply_by_reply(connection: AbstractConnection) -> None:
    replies = await asyncio.wait_for(
        connect.round_trip(
            connection,
            ("DEL", "contract:k", "contract:h"),
            ("SET", "contract:k", "v"),
            ("GET", "contract:k"),
            ("HSET", "contract:h", "a", "1", "b", "2"),
            ("HGETALL", "contract:h"),
        ),
        TIMEOUT,
    )
    # RESP2 shapes, before any callback: the bus reads these.
    assert replies[1:4] == [b"OK", b"v", 2], contract(
        "send_packed_command() + read_response()", "round_trip and the writer"
    )
    assert replies[4] == [b"a", b"1", b"b", b"2"], contract(
        "read_response() (raw RESP2 replies, protocol=2)", "the writer"
    )


async def test_an_error_reply_is_raised_as_response_error(connection: AbstractConnection) -> None:
    replies = await asyncio.wait_for(
        connect.round_trip(connection, ("EVALSHA", "0" * 40, 0), ("PING",)), TIMEOUT
    )
    assert isinstance(replies[0], ResponseError), contract(
        "read_response() raising ResponseError for an error reply", "read_reply"
    )
    assert writer.is_noscript(replies[0]), contract("the NOSCRIPT error", "the writer's reload")
    assert replies[1] in (b"PONG", "PONG"), contract(
        "read_response() after an error reply", "read_reply"
    )


def test_response_callbacks_turn_query_replies_into_python_values(client: Any) -> None:
    callbacks = getattr(client, "response_callbacks", None)
    assert isinstance(callbacks, dict), contract("Redis.response_callbacks", "Writer._drain")
    hgetall = callbacks.get("HGETALL")
    assert hgetall is not None and hgetall([b"a", b"1"]) == {b"a": b"1"}, contract(
        "response_callbacks['HGETALL']", "Writer._drain (presence reads)"
    )
    smembers = callbacks.get("SMEMBERS")
    assert smembers is not None and smembers([b"x", b"y"]) == {b"x", b"y"}, contract(
        "response_callbacks['SMEMBERS']", "Writer._drain (presence reads)"
    )


async def test_subscribe_over_send_command_and_read_response(
    client: Any, connection: AbstractConnection
) -> None:
    sub = await asyncio.wait_for(connect.open_connection(client), TIMEOUT)
    try:
        await asyncio.wait_for(
            sub.send_command("SUBSCRIBE", "contract:ch", check_health=False), TIMEOUT
        )
        confirm = await asyncio.wait_for(sub.read_response(), TIMEOUT)
        assert list(confirm) == [b"subscribe", b"contract:ch", 1], contract(
            "send_command('SUBSCRIBE') + read_response()", "the subscriber"
        )
        await asyncio.wait_for(
            connect.round_trip(connection, ("PUBLISH", "contract:ch", "x")), TIMEOUT
        )
        message = await asyncio.wait_for(sub.read_response(), TIMEOUT)
        assert list(message) == [b"message", b"contract:ch", b"x"], contract(
            "read_response() of a pub/sub message", "Subscriber._read_forever"
        )
        await asyncio.wait_for(sub.send_command("PING", check_health=False), TIMEOUT)
        pong = await asyncio.wait_for(sub.read_response(), TIMEOUT)
        assert list(pong) == [b"pong", b""], contract(
            "PING on a subscribed connection", "the subscriber's keep-alive"
        )
    finally:
        await connect.close_connection(sub)


async def test_a_closed_server_socket_raises_a_network_error(
    client: Any, connection: AbstractConnection
) -> None:
    """The bus reconnects on these exceptions; anything else would end its loops."""
    victim = await asyncio.wait_for(connect.open_connection(client), TIMEOUT)
    try:
        await asyncio.wait_for(victim.send_command("CLIENT", "ID"), TIMEOUT)
        client_id = await asyncio.wait_for(victim.read_response(), TIMEOUT)
        await asyncio.wait_for(
            connect.round_trip(connection, ("CLIENT", "KILL", "ID", client_id)), TIMEOUT
        )
        try:
            await asyncio.wait_for(victim.read_response(), TIMEOUT)
        except TimeoutError:  # (an OSError too: caught first)
            pytest.fail(contract("read_response() on a socket the server closed", "the loops"))
        except connect.NETWORK_ERRORS:
            pass
        else:
            pytest.fail(contract("read_response() on a socket the server closed", "the loops"))
    finally:
        await connect.close_connection(victim)


async def test_a_server_that_never_answers_times_the_connect_out() -> None:
    """A frozen Redis accepts connections (the kernel's backlog) and answers nothing: the
    handshake of ``connect()`` must give way to open_connection's timeout, and the half-made
    connection be closed, not leaked."""
    ends: list[asyncio.Future[bytes]] = []

    async def mute(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        ends.append(asyncio.ensure_future(reader.read()))  # all it is sent, until EOF

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect.connect_redis(f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        try:
            conn = await asyncio.wait_for(connect.open_connection(client, 0.3), TIMEOUT)
        except TimeoutError:
            pass
        else:  # no handshake to wait for (the writer's PING is bounded all the same)
            await connect.close_connection(conn)
        assert time.monotonic() - started < 0.3 + 1.0, contract(
            "AbstractConnection.connect() (cancelled mid-handshake)", "open_connection"
        )
        assert ends, "the mute server saw no connection"
        await asyncio.wait_for(ends[0], TIMEOUT)  # EOF: the socket was closed
    finally:
        server.close()
        for end in ends:
            end.cancel()
        await client.aclose()
