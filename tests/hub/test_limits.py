"""Per-connection limits: groups, streams (server-to-client and uploads together), and the items
an upload buffers. Past a limit the call fails with an error naming the setting; the
connection stays up and serves what comes next."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from backplane import Hub
from backplane.protocol import (
    CancelInvocationMessage,
    CompletionMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

from .helpers import Client, make_handler

release = asyncio.Event()


class LimitedHub(Hub):
    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def ping(self) -> str:
        return "pong"

    async def forever(self):  # type: ignore[no-untyped-def]
        yield 1
        await asyncio.Event().wait()

    async def count(self, items: AsyncIterator[int]) -> int:
        total = 0
        async for _ in items:
            total += 1
        return total

    async def hold(self, items: AsyncIterator[int]) -> int:
        await release.wait()  # reads nothing until released
        return sum([i async for i in items])


async def connect(handler: Any, cid: str = "c1") -> Client:
    client = Client(handler, cid)
    await client.handshake()
    return client


def errors(messages: list[Any]) -> dict[str, str]:
    return {m.invocation_id: m.error for m in messages if isinstance(m, CompletionMessage)}


async def test_a_join_past_max_groups_fails_and_the_connection_stays() -> None:
    handler = make_handler(LimitedHub, max_groups_per_connection=3)
    c = await connect(handler)
    for i in range(3):
        await c.send(InvocationMessage("Join", [f"g{i}"], f"j{i}"))
    await c.send(InvocationMessage("Join", ["g0"], "again"))  # a group it is in: no change
    await c.send(InvocationMessage("Join", ["g3"], "over"))
    await c.send(InvocationMessage("Ping", [], "after"))
    got = await c.wait_messages(6)
    failed = errors(got)
    assert [k for k, v in failed.items() if v] == ["over"], failed
    assert failed["over"].startswith("An unexpected error occurred invoking 'Join' on the server.")
    assert "--max-groups-per-connection (3)" in failed["over"]
    assert CompletionMessage.with_result("after", "pong") in got
    assert not c.conn.closing
    assert set(c.conn.groups) == {"g0", "g1", "g2"}
    assert handler.lifetime.registry.refused == 1  # type: ignore[attr-defined]


async def test_streams_and_uploads_past_max_streams_fail_and_the_connection_stays() -> None:
    handler = make_handler(LimitedHub, max_streams_per_connection=2)
    c = await connect(handler)
    await c.send(StreamInvocationMessage("s1", "Forever", []))
    await c.send(InvocationMessage("Count", [], "u1", stream_ids=["up1"]))  # an upload: two
    await c.send(StreamInvocationMessage("s2", "Forever", []))  # a third: refused
    await c.send(InvocationMessage("Count", [], "u2", stream_ids=["up2"]))  # refused too
    got = await c.wait_messages(3)
    failed = errors(got)
    assert set(failed) == {"s2", "u2"}, got
    for text in failed.values():
        assert "--max-streams-per-connection (2)" in text
    assert handler.stats.refusals["streams"] == 2
    # Items for the refused upload are dropped; the accepted one works.
    await c.send(StreamItemMessage("up2", 1))
    await c.send(StreamItemMessage("up1", 1))
    await c.send(CompletionMessage.empty("up1"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("u1", 1)]
    # With the upload done, there is room for one more stream.
    await c.send(CancelInvocationMessage("s1"))
    await c.send(StreamInvocationMessage("s3", "Forever", []))
    got = await c.wait_messages(2)
    assert StreamItemMessage("s3", 1) in got, got
    assert not c.conn.closing


async def test_an_upload_buffers_at_most_stream_buffer_capacity_items() -> None:
    release.clear()
    handler = make_handler(LimitedHub, stream_buffer_capacity=3)
    c = await connect(handler)
    await c.send(InvocationMessage("Hold", [], "h", stream_ids=["up"]))
    for i in range(3):
        await c.send(StreamItemMessage("up", i))
    upload = c.conn.stream_tracker.uploads["up"]
    assert upload.capacity == 3
    # The fourth item waits: the connection reads nothing more until the method takes one.
    fourth = asyncio.ensure_future(c.send(StreamItemMessage("up", 3)))
    await asyncio.sleep(0.1)
    assert not fourth.done()
    release.set()
    await asyncio.wait_for(fourth, 2.0)
    await c.send(CompletionMessage.empty("up"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("h", 6)]
