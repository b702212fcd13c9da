"""Exactly once over Redis: the publisher's numbers and the receiver's checks.

The sans-I/O rules first, then real nodes on a real redis-server: a message published twice
(as a writer does when it resends a batch whose replies never came) reaches a client once, a
gap is counted and still delivered, and messages without numbers (a .NET node, a service
publishing by hand) are delivered as they come.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from backplane.protocol import JSON_PROTOCOL, InvocationMessage
from backplane.redis import wire
from backplane.redis.sequence import PublishSequence, ReceiveSequence
from tests.lifetime.cluster import Cluster, settle, targets

# -- the rules, sans-I/O ---------------------------------------------------------------------


def test_one_counter_for_every_channel_and_a_link_per_channel() -> None:
    numbers = PublishSequence()
    assert numbers.next(b"a", 0.0) == (1, 0)
    assert numbers.next(b"b", 0.0) == (2, 0)
    assert numbers.next(b"a", 0.0) == (3, 1)
    assert numbers.next(b"b", 0.0) == (4, 2)


def test_a_publisher_forgets_idle_channels_and_says_so_with_prev_zero() -> None:
    numbers = PublishSequence(ttl=5.0)
    numbers.next(b"a", 0.0)
    numbers.next(b"b", 100.0)  # sweeps: a has been idle for 100 s
    assert numbers.channels == 1
    assert numbers.next(b"a", 100.0) == (3, 0)


def test_duplicates_are_dropped_and_counted() -> None:
    seen = ReceiveSequence()
    assert seen.accept("n1", b"ch", 5, 0, 0.0)
    assert seen.accept("n1", b"ch", 9, 5, 0.0)
    assert not seen.accept("n1", b"ch", 9, 5, 0.0)
    assert not seen.accept("n1", b"ch", 5, 0, 0.0)
    assert seen.stats.duplicates == 2
    assert seen.stats.gaps == 0
    # Another publisher, or another channel, has numbers of its own.
    assert seen.accept("n2", b"ch", 5, 0, 0.0)
    assert seen.accept("n1", b"other", 7, 0, 0.0)


def test_a_broken_link_is_a_gap_counted_and_the_message_still_delivered() -> None:
    seen = ReceiveSequence()
    assert seen.accept("n1", b"ch", 1, 0, 0.0)
    assert seen.accept("n1", b"ch", 4, 3, 0.0)  # #3 on this channel never came
    assert seen.stats.gaps == 1
    assert seen.accept("n1", b"ch", 5, 4, 0.0)
    # prev 0: the publisher forgot the channel; no gap can be told.
    assert seen.accept("n1", b"ch", 9, 0, 0.0)
    assert seen.stats.gaps == 1


def test_a_forgotten_channel_starts_afresh() -> None:
    seen = ReceiveSequence(ttl=10.0)
    seen.accept("n1", b"ch", 1, 0, 0.0)
    seen.forget_channel(b"ch")
    assert seen.accept("n1", b"ch", 7, 6, 1.0)  # resubscribed: what it missed is no gap
    assert seen.stats.gaps == 0
    seen.accept("n1", b"x", 8, 0, 100.0)  # sweeps what is older than the ttl
    assert seen.tracked == 1


# -- the wire ----------------------------------------------------------------------------------


def test_numbers_ride_after_the_origin_and_readers_of_four_elements_are_unaffected() -> None:
    payloads = {"json": b'{"type":1,"target":"M","arguments":[]}\x1e'}
    data = wire.write_invocation(payloads, ["x"], origin="node-a", seq=12, prev=7)
    read = wire.read_invocation(data)
    assert (read.origin, read.seq, read.prev) == ("node-a", 12, 7)
    assert read.excluded == ["x"] and read.payloads == payloads
    assert read.invocation_id is None and read.return_channel is None
    # Without numbers, the 5-element form of the previous release: seq 0 means none.
    older = wire.read_invocation(wire.write_invocation(payloads, origin="node-a"))
    assert (older.origin, older.seq, older.prev) == ("node-a", 0, 0)
    # Numbers of a wrong type are someone else's addition: ignored, not an error.
    odd = wire.read_invocation(wire._pack([[], payloads, None, None, "node-a", "x", -1]))
    assert (odd.seq, odd.prev) == (0, 0)


# -- real nodes, real Redis ------------------------------------------------------------------


def _invocation(target: str, *args: object) -> dict[str, bytes]:
    return {"json": JSON_PROTOCOL.write_message(InvocationMessage(target, list(args)))}


async def test_a_message_published_twice_reaches_the_client_once(cluster: Cluster) -> None:
    h1, h2 = await cluster.add_node(), await cluster.add_node()
    await cluster.connect(h1, "a")
    b = await cluster.connect(h2, "b")
    await h1.context.groups.add("b", "room")
    # What node 1 puts on Redis, captured by a plain subscriber ...
    raw = aioredis.Redis.from_url(cluster.url)
    pubsub = raw.pubsub()
    channel = cluster.lifetime(h1).channels.group("room")
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    try:
        await h1.context.clients.group("room").send("Msg", 1)
        await h1.context.clients.group("room").send("Msg", 2)
        captured = []
        for _ in range(2):
            message = await pubsub.get_message(timeout=2.0)
            assert message is not None
            captured.append(message["data"])
        assert targets(await b.wait_messages(2)) == [("Msg", [1]), ("Msg", [2])]
        # ... published again, as a writer resends a batch whose replies never came.
        for data in captured:
            await raw.publish(channel, data)
        await h1.context.clients.group("room").send("Msg", 3)
        assert targets(await b.wait_messages(1)) == [("Msg", [3])]
        await settle(0.1)
        assert targets(b.messages()) == []
        received = cluster.nodes[1].received.stats
        assert (received.duplicates, received.gaps) == (2, 0)
    finally:
        await pubsub.aclose()
        await raw.aclose()


async def test_a_gap_is_counted_and_unnumbered_messages_pass_as_they_come(
    cluster: Cluster,
) -> None:
    h1 = await cluster.add_node()
    a = await cluster.connect(h1, "a")
    channel = cluster.lifetime(h1).channels.connection("a")
    raw = aioredis.Redis.from_url(cluster.url)
    try:
        numbered = [
            wire.write_invocation(_invocation("N", 1), origin="elsewhere", seq=10, prev=0),
            wire.write_invocation(_invocation("N", 2), origin="elsewhere", seq=14, prev=12),
        ]
        dotnet = wire.write_invocation(_invocation("Plain"))
        for data in (*numbered, dotnet, dotnet):
            await raw.publish(channel, data)
        got = targets(await a.wait_messages(4))
        assert got == [("N", [1]), ("N", [2]), ("Plain", []), ("Plain", [])]
        received = cluster.nodes[0].received.stats
        assert (received.duplicates, received.gaps) == (0, 1)
    finally:
        await raw.aclose()
