"""The owner of pending client results, without sockets or Redis."""

from __future__ import annotations

import asyncio

import pytest

from backplane import (
    ClientDisconnectedError,
    ClientNotFoundError,
    ClientResultFailedError,
    ClientResultTimeoutError,
)
from backplane.lifetime.base import DISCONNECTED
from backplane.lifetime.results import ClientResults, new_invocation_id
from backplane.protocol import JSON_PROTOCOL, CompletionMessage, InvocationMessage
from tests.lifetime.fakes import FakeConnection


def test_invocation_ids_are_22_url_safe_characters() -> None:
    ids = {new_invocation_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 22 and "=" not in i and "+" not in i and "/" not in i for i in ids)


async def test_local_result_through_the_connection_waiter() -> None:
    results = ClientResults()
    conn = FakeConnection("c")
    conn.protocol = JSON_PROTOCOL
    call = asyncio.ensure_future(results.invoke_local(conn, "Ask", [1], 1.0))
    await asyncio.sleep(0)
    (message,) = conn.written
    assert isinstance(message, InvocationMessage) and message.target == "Ask"
    assert message.invocation_id is not None
    conn.results[message.invocation_id](CompletionMessage.with_result(message.invocation_id, 7))
    assert await call == 7
    assert conn.results == {}


async def test_local_result_fails_on_error_disconnect_and_timeout() -> None:
    results = ClientResults()
    conn = FakeConnection("c")
    conn.protocol = JSON_PROTOCOL
    for error, expected in (
        ("nope", ClientResultFailedError),
        (DISCONNECTED, ClientDisconnectedError),
    ):
        call = asyncio.ensure_future(results.invoke_local(conn, "Ask", [], None))
        await asyncio.sleep(0)
        (invocation_id,) = conn.results
        conn.results[invocation_id](CompletionMessage.with_error(invocation_id, error))
        with pytest.raises(expected):
            await call
    with pytest.raises(ClientResultTimeoutError, match="'c' did not answer within 0.01"):
        await results.invoke_local(conn, "Ask", [], 0.01)
    assert conn.results == {}


async def test_local_result_of_a_closing_or_unready_connection_is_not_found() -> None:
    results = ClientResults()
    conn = FakeConnection("c")  # no protocol yet
    with pytest.raises(ClientNotFoundError, match="'c' does not exist"):
        await results.invoke_local(conn, "Ask", [], 1.0)
    conn.protocol = JSON_PROTOCOL
    conn.closing = True
    with pytest.raises(ClientNotFoundError):
        await results.invoke_local(conn, "Ask", [], 1.0)
    assert conn.written == []


async def test_expected_results_are_completed_by_id() -> None:
    results = ClientResults()
    first, second = results.expect("1"), results.expect("2")
    results.complete(CompletionMessage.with_result("1", "yes"))
    results.complete(CompletionMessage.with_error("2", "broken"))
    results.complete(CompletionMessage.with_result("unknown", None))  # ignored
    assert await results.wait("c", first, 1.0, 1.0, None) == "yes"
    with pytest.raises(ClientResultFailedError, match="broken"):
        await results.wait("c", second, 1.0, 1.0, None)
    results.discard("1")
    results.discard("1")  # twice is fine
    results.complete(CompletionMessage.with_result("1", "late"))  # no longer expected


async def test_wait_times_out_and_notices_a_dead_owner() -> None:
    results = ClientResults()
    future = results.expect("1")
    with pytest.raises(ClientResultTimeoutError):
        await results.wait("c", future, 0.05, 0.01, None)
    asks = 0

    async def alive() -> bool:
        nonlocal asks
        asks += 1
        return asks < 3

    with pytest.raises(ClientDisconnectedError, match=DISCONNECTED):
        await results.wait("c", future, None, 0.01, alive)
    assert asks == 3
    assert not future.done()  # shielded: the future itself outlives a failed wait


async def test_fail_all_fails_what_is_still_pending() -> None:
    results = ClientResults()
    done, pending = results.expect("1"), results.expect("2")
    results.complete(CompletionMessage.with_result("1", 1))
    results.fail_all(lambda: RuntimeError("stopping"))
    assert done.result() == 1
    with pytest.raises(RuntimeError, match="stopping"):
        await pending
