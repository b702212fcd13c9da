"""A drain (``HubConnectionHandler.close_all``) lets work in flight answer before the Close:
invocations already received, and methods reading uploads whose clients go on sending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from backplane import Hub
from backplane.protocol import CloseMessage, CompletionMessage, InvocationMessage, StreamItemMessage

from .helpers import Client, make_handler

TIMEOUT = 5.0


class UploadHub(Hub):
    async def total(self, items: AsyncIterator[int]) -> int:
        return sum([i async for i in items])


async def test_an_upload_in_flight_answers_before_the_drain_closes_its_connection() -> None:
    handler = make_handler(UploadHub)
    c = Client(handler, "c1")
    await c.handshake()
    await c.send(InvocationMessage("Total", [], "t", stream_ids=["up"]))
    await c.send(StreamItemMessage("up", 1))
    drain = asyncio.create_task(handler.close_all(timeout=TIMEOUT))
    await asyncio.sleep(0.05)  # the drain has begun; the client goes on sending
    await c.send(StreamItemMessage("up", 2))
    await c.send(CompletionMessage.empty("up"))
    got = await c.wait_messages(2, timeout=TIMEOUT)
    assert got == [CompletionMessage.with_result("t", 3), CloseMessage(None, True)], got
    c.conn.outbound.close()
    await c.conn.transport_closed()
    await asyncio.wait_for(drain, TIMEOUT)


async def test_an_upload_that_never_ends_is_cut_at_the_drain_deadline() -> None:
    handler = make_handler(UploadHub)
    c = Client(handler, "c1")
    await c.handshake()
    await c.send(InvocationMessage("Total", [], "t", stream_ids=["up"]))
    loop = asyncio.get_running_loop()
    started = loop.time()
    drain = asyncio.create_task(handler.close_all(timeout=0.4))
    got = await c.wait_messages(1, timeout=TIMEOUT)
    assert got == [CloseMessage(None, True)], got
    assert loop.time() - started < TIMEOUT
    await c.conn.transport_closed()
    await asyncio.wait_for(drain, TIMEOUT)
