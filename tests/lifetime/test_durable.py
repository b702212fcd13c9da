"""--durable-resume in process, on a real Redis: a stateful connection survives its node.

The node holding a durable connection records it before sending anything; when that node
dies, another takes the connection up from the record and from the history of its channels.
The client (tests/lifetime/durable.py) must see every message exactly once, in order, with the
numbering it expects. Nothing leaves before it is recorded; a record that may miss something
is refused.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from backplane import Emitter
from backplane.redis.keys import history_key, resume_key, resume_log_key, watched_key
from tests.conftest import RedisServer
from tests.lifetime.cluster import HUB, Cluster, wait_until
from tests.lifetime.durable import PATH, RS, Client, add_node, close, crash, publish


async def test_a_crashed_nodes_connection_is_taken_up_with_every_message_once(
    cluster: Cluster,
) -> None:
    holder, taker, other = [await add_node(cluster) for _ in range(3)]
    nodes = [holder, taker, other]
    try:
        record, old = await holder.connect()
        cid = record.connection_id
        await holder.handler.context.groups.add(cid, "room")
        group = cluster.lifetime(holder.handler).channels.group("room")
        # Every publisher hears of the watch before the traffic starts.
        assert await wait_until(lambda: all(group in n.history for n in nodes), 2.0)
        client = Client()
        sent: list[tuple[str, int]] = []
        steady = [
            asyncio.ensure_future(publish(name, node, 200, sent))
            for name, node in (("other", other), ("taker", taker))
        ]
        doomed = asyncio.ensure_future(publish("holder", holder, 200, sent))

        async def direct() -> None:  # to the connection itself, from another node
            for i in range(1, 101):
                await other.handler.context.clients.client(cid).send("D", i)
                await asyncio.sleep(0.003)

        steady.append(asyncio.ensure_future(direct()))
        pubsub = cluster.options.get("pubsub")
        emitter = Emitter(cluster.url, hub=HUB, channel_prefix=cluster.prefix, pubsub=pubsub)

        async def emit() -> None:  # a service publishing to the group through Redis
            for i in range(1, 101):
                await emitter.clients.group("room").send("E", i)
                await asyncio.sleep(0.003)

        steady.append(asyncio.ensure_future(emit()))
        # The client reads and acknowledges part of what it saw, until its node dies.
        for turn in range(40):
            await asyncio.sleep(0.004)
            client.read(old)
            if turn % 5 == 0 and client.last > 3:
                await client.ack(old, client.last - 3)
        doomed.cancel()
        await crash(holder)
        seen = client.last
        assert seen > 20, "the client saw too little before the crash"
        # Published while no node delivers to the connection (Redis has them before the
        # take-up begins): only the group's history keeps these, and the taker revives them.
        for i in range(1, 6):
            await other.handler.context.clients.group("room").send("N", "gap", i)
            sent.append(("gap", i))
        assert await other.node.bus.flush(5.0)
        # The client comes back to another node: taken up from the record.
        taken = await taker.handover.take_up(record.token, PATH, None, {}, {})
        assert not isinstance(taken, int), f"refused: {taken}"
        new_record, new = taken
        assert new_record.revived and new.connection_id == cid
        new.resume()
        await asyncio.gather(*steady)
        assert await wait_until(lambda: client.read(new) >= 0 and _complete(client, sent), 5.0)
        assert client.sequences and client.sequences[0] <= seen + 1
        for name, count in (("other", 200), ("taker", 200), ("gap", 5)):
            got = [i for n, i in client.invocations() if n == name]
            assert got == list(range(1, count + 1)), (name, got)
        # What the holder published before it died: a prefix, once each, in order.
        mine = [i for n, i in client.invocations() if n == "holder"]
        assert mine == list(range(1, len(mine) + 1)), mine
        assert [a[0] for a in client.invocations("D")] == list(range(1, 101))
        assert [a[0] for a in client.invocations("E")] == list(range(1, 101))
        await emitter.aclose()
        assert new.groups == {"room"}
        # Once the dead node is purged, presence still has the connection in its group.
        dead = holder.node.node_id
        assert await wait_until(lambda: taker.node.is_dead(dead), 5.0)
        await asyncio.sleep(0.1)
        presence = taker.handler.context.presence
        assert cid in await presence.group_members("room")
        assert cid in await presence.connections()
        assert taker.handler.stats.resumes["after_crash"] == 0  # counted by the transport
        assert taker.handler.stats.revived_messages > 0
    finally:
        await close(nodes)


def _complete(client: Client, sent: list[tuple[str, int]]) -> bool:
    got = client.invocations()
    return (
        all((name, i) in got for name, i in sent if name != "holder")
        and len(client.invocations("D")) >= 100
        and len(client.invocations("E")) >= 100
    )


async def test_a_live_handover_of_a_durable_connection_loses_nothing(cluster: Cluster) -> None:
    """The holder lives: the taker asks it (the holder's records meanwhile find the entry
    claimed and wait for the handover instead of ending the connection)."""
    holder, taker, other = [await add_node(cluster) for _ in range(3)]
    nodes = [holder, taker, other]
    try:
        record, old = await holder.connect()
        await holder.handler.context.groups.add(record.connection_id, "room")
        group = cluster.lifetime(holder.handler).channels.group("room")
        assert await wait_until(lambda: all(group in n.history for n in nodes), 2.0)
        client = Client()
        sent: list[tuple[str, int]] = []
        traffic = [
            asyncio.ensure_future(publish(name, node, 150, sent))
            for name, node in (("other", other), ("taker", taker), ("holder", holder))
        ]
        for _ in range(20):
            await asyncio.sleep(0.004)
            client.read(old)
        old.detach()  # the socket drops; the holder keeps the connection
        taken = await taker.handover.take_up(record.token, PATH, None, {}, {})
        assert not isinstance(taken, int), f"refused: {taken}"
        new_record, new = taken
        assert not new_record.revived
        new.resume()
        await asyncio.gather(*traffic)
        assert await wait_until(
            lambda: client.read(new) >= 0 and len(client.invocations()) >= 450, 5.0
        )
        for name in ("other", "taker", "holder"):
            got = [i for n, i in client.invocations() if n == name]
            assert got == list(range(1, 151)), (name, got)
        assert record.connection_id not in holder.handler.connections
        # The taker records it now.
        recorder = taker.handover.recorder
        assert recorder is not None and recorder.recording(new)
    finally:
        await close(nodes)


async def test_nothing_reaches_the_client_before_it_is_recorded(tmp_path: Path) -> None:
    """Redis frozen: the messages wait (and an Ack and a ping behind them); thawed, all come
    in order, and the record holds them."""
    server = RedisServer(tmp_path)
    server.start()
    cluster = Cluster(server.url)
    nodes = []
    try:
        node = await add_node(cluster)
        nodes.append(node)
        node.node.bus.reply_timeout = 0.5  # the freeze outlasts it: the record is retried
        record, connection = await node.connect()
        await node.handler.context.groups.add(record.connection_id, "room")
        client = Client()
        sent: list[tuple[str, int]] = []
        await publish("before", node, 5, sent)
        assert await wait_until(lambda: client.read(connection) >= 0 and client.last >= 5, 2.0)
        server.freeze()
        try:
            await publish("frozen", node, 20, sent)
            # The client's invocation is answered and acknowledged meanwhile, behind them.
            await connection.receive(
                b'{"type":1,"invocationId":"1","target":"ping","arguments":[]}' + RS, False
            )
            await asyncio.sleep(0.1)
            connection.tick(asyncio.get_running_loop().time() + 30)  # an Ack, a ping
            await asyncio.sleep(1.2)
            assert client.read(connection) == 0, "a message left before it was recorded"
            assert connection.outbound.held > 20
        finally:
            server.thaw()
        assert await wait_until(
            lambda: client.read(connection) >= 0 and len(client.invocations()) == 25, 5.0
        )
        assert [i for _, i in client.invocations()] == [1, 2, 3, 4, 5, *range(1, 21)]
        assert client.last == 26  # and the completion of ping, last
        key = resume_key(cluster.prefix.encode(), record.token)
        bus = node.node.bus
        assert int(await bus.query("HGET", key, "sent")) >= 26
        assert int(await bus.query("HGET", key, "acked")) == 1
        assert await bus.query("ZCARD", resume_log_key(key)) == 26
        recorder = node.handover.recorder
        assert recorder is not None and recorder.stats.failures > 0
    finally:
        server.thaw()
        await close(nodes)
        await cluster.close()
        server.stop()


@pytest.mark.parametrize(
    "damage", ["no entry", "no log", "history gap", "not watched", "not durable"]
)
async def test_a_resume_that_could_miss_something_is_refused(
    cluster: Cluster, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hubplane.handover")
    holder = await add_node(cluster, durable=damage != "not durable")
    taker, other = await add_node(cluster), await add_node(cluster)
    nodes = [holder, taker, other]
    try:
        record, old = await holder.connect()
        await holder.handler.context.groups.add(record.connection_id, "room")
        group = cluster.lifetime(holder.handler).channels.group("room")
        if damage != "not durable":
            assert await wait_until(lambda: group in other.history, 2.0)
        client = Client()
        sent: list[tuple[str, int]] = []
        await publish("other", other, 10, sent)
        assert await wait_until(lambda: client.read(old) >= 0 and client.last >= 10, 2.0)
        await crash(holder)
        # Published while no node delivers to the connection: only the history has these.
        await publish("late", other, 10, sent)
        bus = other.node.bus
        prefix, on_cluster = cluster.prefix.encode(), bus.cluster
        key = resume_key(prefix, record.token)
        if damage == "no entry":
            await bus.query("DEL", key)
        elif damage == "no log":
            await bus.query("DEL", resume_log_key(key, on_cluster))
        elif damage == "history gap":
            history = history_key(prefix, group, on_cluster, bus.sharded)
            entries = await bus.query("XRANGE", history, "-", "+")
            await bus.query("XDEL", history, entries[-5][0])
        elif damage == "not watched":  # the watch expired: publishers keep no history
            await bus.query("ZREM", watched_key(prefix, on_cluster), group)
        refused = taker.handover.take_up(record.token, PATH, None, {}, {})
        assert await refused == 404
        why = {
            "no entry": "",
            "no log": "the log does not hold every message",
            "history gap": "are not in the history",
            "not watched": "no history was kept of",
            "not durable": "did not hand it over (404)",
        }[damage]
        assert why in caplog.text
        assert record.connection_id not in taker.handler.connections
        if damage != "no entry":  # the entry goes back to its node: a later try finds it so
            # (the taker queues that write; another node's connection reads it)
            holder_id = holder.node.node_id.encode()
            for _ in range(100):
                if await bus.query("HGET", key, "node") == holder_id:
                    break
                await asyncio.sleep(0.02)
            assert (await bus.query("HGET", key, "node")).decode() == holder.node.node_id
        assert taker.handler.stats.resumes["refused"] == (damage != "no entry")
    finally:
        await close(nodes)
