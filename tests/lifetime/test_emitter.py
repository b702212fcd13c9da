"""The emitter: a process without a node reaching a hub's clients through Redis."""

from __future__ import annotations

import asyncio
import queue
import time
from typing import Any

import pytest

from backplane import BackplaneUnavailable, ConnectionNotFoundError, Emitter, SyncEmitter
from backplane.emitter import _Portal
from tests.conftest import get_free_port
from tests.lifetime.cluster import HUB, Cluster, settle, targets


async def test_emitter_reaches_all_groups_users_and_connections(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    a = await cluster.connect(h1, "a", user="ann")
    b = await cluster.connect(h2, "b", "messagepack")
    await h1.context.groups.add("a", "g")
    await h2.context.groups.add("b", "g")
    emitter = Emitter(cluster.url, hub=HUB, channel_prefix=cluster.prefix)
    try:
        await emitter.clients.all.send("All", 1)
        await emitter.clients.all_except(["a"]).send("AllBut", 2)
        await emitter.clients.group("g").send("Group", 3)
        await emitter.clients.group_except("g", ["b"]).send("GroupBut", 4)
        await emitter.clients.user("ann").send("User", 5)
        await emitter.clients.client("b").send("One", 6)
        await emitter.clients.clients(["a", "b"]).send("Each", 7)
        assert targets(await a.wait_messages(5)) == [
            ("All", [1]),
            ("Group", [3]),
            ("GroupBut", [4]),
            ("User", [5]),
            ("Each", [7]),
        ]
        assert targets(await b.wait_messages(5)) == [
            ("All", [1]),
            ("AllBut", [2]),
            ("Group", [3]),
            ("One", [6]),
            ("Each", [7]),
        ]
        # Groups and aborts from outside.
        await emitter.groups.add("b", "vip")
        assert await emitter.presence.group_members("vip") == ["b"]
        await emitter.clients.group("vip").send("Vip")
        assert targets(await b.wait_messages(1)) == [("Vip", [])]
        await emitter.groups.remove("b", "vip")
        started = time.monotonic()
        with pytest.raises(ConnectionNotFoundError):
            await emitter.groups.add("nobody", "vip")
        assert time.monotonic() - started < 1.6
        await emitter.abort("b")
        deadline = time.monotonic() + 2
        while not b.conn.closing and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert b.conn.closing and not a.conn.closing
    finally:
        await emitter.aclose()
    await settle()
    assert targets(a.messages()) == []


async def test_sync_emitter(cluster: Cluster) -> None:
    h1 = await cluster.add_node()
    a = await cluster.connect(h1, "a", user="ann")

    def use_it() -> None:
        with SyncEmitter(cluster.url, hub=HUB, channel_prefix=cluster.prefix) as emitter:
            emitter.clients.all.send("Sync", "x")
            emitter.groups.add("a", "g")
            emitter.clients.group("g").send("SyncGroup")
            emitter.abort_user("ann")

    await asyncio.to_thread(use_it)
    assert targets(await a.wait_messages(2)) == [("Sync", ["x"]), ("SyncGroup", [])]
    deadline = time.monotonic() + 2
    while not a.conn.closing and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert a.conn.closing


async def test_emitter_without_redis_fails_clearly(tmp_path: Any) -> None:
    emitter = Emitter(f"redis://127.0.0.1:{get_free_port()}/0", hub=HUB)
    try:
        with pytest.raises(BackplaneUnavailable):
            await emitter.clients.all.send("Nobody")
    finally:
        await emitter.aclose()


def test_a_sync_call_that_times_out_is_cancelled_in_the_emitter_loop() -> None:
    # SyncEmitter's calls run in a loop thread (anyio's blocking portal): a caller that gave
    # up must not leave its coroutine running there (it would publish later, unseen).
    portal = _Portal(timeout=0.2)
    ended: queue.SimpleQueue[str] = queue.SimpleQueue()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.put("cancelled")
            raise

    async def answers(x: int) -> int:
        return x + 1

    try:
        with pytest.raises(TimeoutError):
            portal.run(hangs)
        assert ended.get(timeout=5) == "cancelled"
        assert portal.run(answers, 1) == 2  # the loop goes on serving
    finally:
        portal.close()
    assert not portal._thread.is_alive()
