"""Stateful reconnect inside a connection: numbering, acks, replay, sequence, duplicates."""

from __future__ import annotations

from typing import Any

import orjson

from backplane import Hub
from backplane.protocol import (
    AckMessage,
    CloseMessage,
    CompletionMessage,
    InvocationMessage,
    SequenceMessage,
)

from .helpers import RS, Client, make_handler

calls: list[Any] = []


class Counting(Hub):
    async def record(self, value: Any) -> None:
        calls.append(value)


async def stateful_client(version: int = 2, allowed: bool = True) -> Client:
    client = Client(make_handler(Counting), "c1")
    client.conn.stateful_allowed = allowed
    await client.conn.receive(orjson.dumps({"protocol": "json", "version": version}) + RS, False)
    assert client.conn.outbound.take().startswith(b"{}\x1e")
    return client


async def push(client: Client, *values: Any) -> None:
    for v in values:
        await client.conn.handler.context.clients.client("c1").send("Push", v)


async def test_enabled_only_with_version_2_when_negotiated() -> None:
    assert (await stateful_client()).conn.stateful
    assert not (await stateful_client(version=1)).conn.stateful
    assert not (await stateful_client(allowed=False)).conn.stateful


async def test_acks_both_ways() -> None:
    client = await stateful_client()
    await push(client, 1, 2, 3)
    assert [m.arguments for m in client.messages() if isinstance(m, InvocationMessage)] == [
        [1],
        [2],
        [3],
    ]
    await client.send(AckMessage(2))
    buffer = client.conn.message_buffer
    assert buffer is not None and [seq for seq, _ in buffer.replay] == [3]
    calls.clear()
    await client.send(InvocationMessage("Record", ["a"]))
    await client.send(InvocationMessage("Record", ["b"]))
    await client.wait_messages(0)
    client.conn.handler.tick(0.0)
    acks = [m for m in client.messages() if isinstance(m, AckMessage)]
    assert [a.sequence_id for a in acks] == [2]
    client.conn.handler.tick(0.0)  # nothing new: no second Ack
    assert not [m for m in client.messages() if isinstance(m, AckMessage)]


async def test_detach_resume_replays_the_unacknowledged_in_order() -> None:
    client = await stateful_client()
    await push(client, 1, 2, 3)
    client.messages()
    await client.send(AckMessage(1))
    client.conn.detach()
    await push(client, 4, 5)  # while no transport is attached
    client.conn.resume()
    got = client.messages()
    assert isinstance(got[0], SequenceMessage) and got[0].sequence_id == 2
    assert [m.arguments for m in got[1:]] == [[2], [3], [4], [5]]


async def test_after_resume_incoming_waits_for_sequence_and_drops_duplicates() -> None:
    client = await stateful_client()
    calls.clear()
    for v in ("a", "b"):
        await client.send(InvocationMessage("Record", [v]))
    await client.wait_messages(0)
    client.conn.detach()
    client.conn.resume()
    client.messages()
    await client.send(InvocationMessage("Record", ["stale"]))  # before Sequence: ignored
    await client.send(SequenceMessage(2))
    await client.send(InvocationMessage("Record", ["b"]))  # number 2: a duplicate
    await client.send(InvocationMessage("Record", ["c"]))  # number 3: new
    await client.send(InvocationMessage("Record", ["x"], invocation_id="9"))
    replies = await client.wait_messages(1)
    assert isinstance(replies[0], CompletionMessage)
    assert calls == ["a", "b", "c", "x"]


async def test_a_sequence_beyond_what_was_received_fails_the_connection() -> None:
    client = await stateful_client()
    await client.send(InvocationMessage("Record", ["a"]))
    client.conn.detach()
    client.conn.resume()
    client.messages()
    await client.send(SequenceMessage(5))
    assert client.conn.closing
    (close,) = [m for m in client.messages() if isinstance(m, CloseMessage)]
    assert close.error
