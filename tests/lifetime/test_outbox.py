"""The outbox's queue policy, without sockets, Redis or an event loop (it is sans-I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from backplane.redis.keys import PUBLISH_MANY, script_sha
from backplane.redis.outbox import (
    KEEP,
    PUBLISH,
    QUERY,
    STATE,
    BackplaneUnavailable,
    BusStats,
    Outbox,
)


class Waiter:
    """A stand-in for the asyncio.Future the bus passes through the outbox."""

    def __init__(self) -> None:
        self.result: Any = None
        self.exception: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any, /) -> None:
        assert not self._done
        self.result, self._done = result, True

    def set_exception(self, exception: BaseException, /) -> None:
        assert not self._done
        self.exception, self._done = exception, True


class Box:
    """An outbox with its stats and a count of its wake-ups."""

    def __init__(self, buffer_limit: int = 10000, up: bool = True) -> None:
        self.stats = BusStats()
        self.wakes = 0
        self.outbox = Outbox(self.stats, self.wake, buffer_limit=buffer_limit)
        self.outbox.writer_up = self.outbox.reader_up = up

    def wake(self) -> None:
        self.wakes += 1

    def take_all(self, now: float = 0.0) -> list[tuple[Any, ...]]:
        """The commands of every batch the outbox hands out at ``now``."""
        sent: list[tuple[Any, ...]] = []
        while (taken := self.outbox.take(now)) is not None:
            sent.extend(taken[2])
        return sent


PUBLISH_SHA = script_sha(PUBLISH_MANY)


def test_runs_of_publishes_go_as_one_script_call_between_other_commands() -> None:
    box = Box()
    outbox = box.outbox
    outbox.publish(b"a", b"1")
    outbox.publish(b"b", b"2")
    outbox.command("SADD", b"k", "c1")
    outbox.publish(b"c", b"3")
    batch, groups, commands = outbox.take(0.0) or ([], [], [])
    assert [c.kind for c in batch] == [PUBLISH, PUBLISH, STATE, PUBLISH]
    assert [len(g) for g in groups] == [2, 1, 1]
    assert commands == [
        ("EVALSHA", PUBLISH_SHA, 0, b"a", b"1", b"b", b"2"),
        ("SADD", b"k", "c1"),
        ("EVALSHA", PUBLISH_SHA, 0, b"c", b"3"),
    ]
    assert outbox.queued == 0
    assert outbox.take(0.0) is None


def test_without_the_script_each_publish_is_its_own_command() -> None:
    box = Box()
    box.outbox.publish_script = False
    box.outbox.publish(b"a", b"1")
    box.outbox.publish(b"b", b"2")
    assert box.take_all() == [("PUBLISH", b"a", b"1"), ("PUBLISH", b"b", b"2")]


def test_a_counted_publish_is_a_command_of_its_own_with_its_reply() -> None:
    box = Box()
    outbox = box.outbox
    waiter = Waiter()
    outbox.publish(b"a", b"1")
    outbox.publish_counted(b"b", b"2", waiter)
    outbox.publish(b"c", b"3")
    _batch, groups, commands = outbox.take(0.0) or ([], [], [])
    assert commands == [
        ("EVALSHA", PUBLISH_SHA, 0, b"a", b"1"),
        ("PUBLISH", b"b", b"2"),
        ("EVALSHA", PUBLISH_SHA, 0, b"c", b"3"),
    ]
    assert groups[1][0].future is waiter


def test_a_batch_holds_at_most_max_batch_commands_in_queue_order() -> None:
    box = Box()
    outbox = box.outbox
    outbox.max_batch = 3
    for i in range(7):
        outbox.command("SET", i, i)
    sizes = []
    order = []
    while (taken := outbox.take(0.0)) is not None:
        sizes.append(len(taken[0]))
        order.extend(cmd.args[1] for cmd in taken[0])
    assert sizes == [3, 3, 1]
    assert order == list(range(7))


def test_the_writer_is_woken_when_there_is_something_new() -> None:
    box = Box()
    outbox = box.outbox
    outbox.publish(b"a", b"1")
    outbox.publish(b"b", b"2")  # already awake: the queue was not empty
    assert box.wakes == 1
    outbox.command("SET", "k", "v")
    outbox.query(("GET", "k"), Waiter())
    assert box.wakes == 3


def test_publishes_are_buffered_through_an_outage_up_to_the_bound_oldest_dropped() -> None:
    box = Box(buffer_limit=3, up=False)
    outbox = box.outbox
    for i in range(5):
        outbox.publish(b"ch", b"%d" % i)
    assert outbox.queued == 3
    assert box.stats.buffered == 5
    assert box.stats.dropped == 2
    assert box.take_all() == [("EVALSHA", PUBLISH_SHA, 0, b"ch", b"2", b"ch", b"3", b"ch", b"4")]


def test_either_side_down_buffers_publishes() -> None:
    box = Box(buffer_limit=1)
    box.outbox.reader_up = False  # the writer is up: Redis is about to be found unreachable
    box.outbox.publish(b"ch", b"1")
    box.outbox.publish(b"ch", b"2")
    assert (box.stats.buffered, box.stats.dropped, box.outbox.queued) == (2, 1, 1)


def test_while_connected_the_queue_limit_drops_the_oldest_publish() -> None:
    box = Box(buffer_limit=2)
    box.outbox.queue_limit = 3
    for i in range(5):
        box.outbox.publish(b"ch", b"%d" % i)
    assert (box.outbox.queued, box.stats.buffered, box.stats.overflowed) == (3, 0, 2)
    assert box.take_all() == [("EVALSHA", PUBLISH_SHA, 0, b"ch", b"2", b"ch", b"3", b"ch", b"4")]


def test_past_the_queue_limit_a_state_write_displaces_a_publish_then_a_state_write() -> None:
    box = Box()
    outbox = box.outbox
    outbox.queue_limit = 3
    outbox.command("SADD", "k", "1")
    outbox.publish(b"ch", b"p")
    outbox.command("SADD", "k", "2")
    outbox.command("SADD", "k", "3")  # the publish goes
    outbox.command("SADD", "k", "4")  # then the oldest state write
    outbox.publish(b"ch", b"q")  # a publish never displaces a state write: it is dropped
    assert box.stats.overflowed == 3
    assert box.take_all() == [("SADD", "k", "2"), ("SADD", "k", "3"), ("SADD", "k", "4")]


def test_past_the_queue_limit_a_query_fails_when_only_waiters_are_queued() -> None:
    box = Box()
    outbox = box.outbox
    outbox.queue_limit = 1
    outbox.query(("GET", "a"), Waiter())
    with pytest.raises(BackplaneUnavailable, match="queue is full"):
        outbox.query(("GET", "b"), Waiter())
    assert outbox.queued == 1 and box.stats.overflowed == 0


def test_kept_writes_share_the_outage_bound_oldest_publish_then_oldest_kept_dropped() -> None:
    box = Box(buffer_limit=2, up=False)
    outbox = box.outbox
    outbox.publish(b"ch", b"p")
    for i in range(4):
        outbox.command("SET", "k", str(i), keep=True)
    assert outbox.queued == 2 and box.stats.dropped == 3
    assert box.take_all() == [("SET", "k", "2"), ("SET", "k", "3")]


def test_only_plain_publishes_make_room_and_when_none_can_the_new_one_is_dropped() -> None:
    box = Box(buffer_limit=2, up=False)
    outbox = box.outbox
    outbox.command("SET", "k", "v", keep=True)
    outbox.command("SET", "k2", "v2", keep=True)
    outbox.publish(b"ch", b"new")
    assert outbox.queued == 2
    assert box.stats.dropped == 1
    assert [c[0] for c in box.take_all()] == ["SET", "SET"]


def test_state_writes_are_dropped_while_the_writer_is_down_kept_ones_wait() -> None:
    box = Box(up=False)
    outbox = box.outbox
    outbox.command("SADD", "k", "dropped")
    outbox.command("SADD", "k", "kept", keep=True)
    assert outbox.queued == 1
    assert box.wakes == 1
    batch, _groups, commands = outbox.take(0.0) or ([], [], [])
    assert batch[0].kind == KEEP
    assert commands == [("SADD", "k", "kept")]


def test_a_state_write_needs_only_the_writer() -> None:
    box = Box()
    box.outbox.reader_up = False
    box.outbox.command("SADD", "k", "v")
    assert box.outbox.queued == 1


def test_queries_fail_at_once_while_the_writer_is_down() -> None:
    box = Box(up=False)
    outbox = box.outbox
    with pytest.raises(BackplaneUnavailable, match=r"unreachable \(connecting\)"):
        outbox.query(("GET", "k"), Waiter())
    outbox.last_error = "Connection refused"
    with pytest.raises(BackplaneUnavailable, match=r"unreachable \(Connection refused\)"):
        outbox.publish_counted(b"ch", b"x", Waiter())
    assert outbox.queued == 0
    assert box.wakes == 0


def test_a_query_is_its_own_command_in_queue_order() -> None:
    box = Box()
    outbox = box.outbox
    waiter = Waiter()
    outbox.command("SADD", "k", "v")
    outbox.query(("SMEMBERS", "k"), waiter)
    batch, groups, commands = outbox.take(0.0) or ([], [], [])
    assert [c.kind for c in batch] == [STATE, QUERY]
    assert commands == [("SADD", "k", "v"), ("SMEMBERS", "k")]
    assert groups[1][0].future is waiter


def test_an_outage_fails_the_waiting_keeps_publishes_and_kept_writes_drops_state() -> None:
    box = Box()
    outbox = box.outbox
    query, counted, answered = Waiter(), Waiter(), Waiter()
    answered.set_result(1)
    outbox.publish(b"ch", b"1")
    outbox.command("SADD", "k", "state")
    outbox.command("SADD", "k", "kept", keep=True)
    outbox.query(("GET", "k"), query)
    outbox.publish_counted(b"ch", b"2", counted)
    outbox.query(("GET", "k"), answered)
    error = BackplaneUnavailable("Redis is unreachable (gone)")
    outbox.fail_pending(error, keep_queued=True)
    assert query.exception is error and counted.exception is error
    assert answered.result == 1  # already answered: left alone
    assert box.take_all() == [("EVALSHA", PUBLISH_SHA, 0, b"ch", b"1"), ("SADD", "k", "kept")]


def test_stopping_fails_the_waiting_and_drops_everything() -> None:
    box = Box()
    outbox = box.outbox
    query = Waiter()
    outbox.publish(b"ch", b"1")
    outbox.command("SADD", "k", "kept", keep=True)
    outbox.query(("GET", "k"), query)
    outbox.fail_pending(BackplaneUnavailable("the node is stopping"), keep_queued=False)
    assert isinstance(query.exception, BackplaneUnavailable)
    assert outbox.queued == 0


def test_after_a_reconnect_publishes_are_held_the_rest_goes_at_once() -> None:
    box = Box()
    outbox = box.outbox
    outbox.publish(b"ch", b"1")
    outbox.command("SADD", "k", "v")
    outbox.publish(b"ch", b"2")
    outbox.query(("GET", "k"), Waiter())
    outbox.hold_until = 10.0
    batch, _groups, commands = outbox.take(5.0) or ([], [], [])
    assert [c.kind for c in batch] == [STATE, QUERY]
    assert commands == [("SADD", "k", "v"), ("GET", "k")]
    assert outbox.queued == 2
    assert outbox.take(9.9) is None  # only held publishes left
    assert outbox.queued == 2
    assert box.take_all(now=10.0) == [("EVALSHA", PUBLISH_SHA, 0, b"ch", b"1", b"ch", b"2")]


def test_a_failed_batch_goes_back_to_the_front_without_its_state_writes() -> None:
    box = Box()
    outbox = box.outbox
    outbox.publish(b"ch", b"1")
    outbox.command("SADD", "k", "state")
    outbox.command("SADD", "k", "kept", keep=True)
    batch, _groups, _commands = outbox.take(0.0) or ([], [], [])
    outbox.publish(b"ch", b"2")  # queued while the batch was on the wire
    outbox.put_back(batch)
    assert box.take_all() == [
        ("EVALSHA", PUBLISH_SHA, 0, b"ch", b"1"),
        ("SADD", "k", "kept"),
        ("EVALSHA", PUBLISH_SHA, 0, b"ch", b"2"),
    ]


def test_commands_redis_did_not_run_are_requeued_in_order_at_the_front() -> None:
    box = Box()
    outbox = box.outbox
    outbox.publish(b"ch", b"1")
    outbox.command("SADD", "k", "state")
    batch, groups, _commands = outbox.take(0.0) or ([], [], [])
    outbox.publish(b"ch", b"2")
    outbox.requeue([*groups[0], *groups[1]])  # NOSCRIPT: state writes go again too
    assert box.take_all() == [
        ("EVALSHA", PUBLISH_SHA, 0, b"ch", b"1"),
        ("SADD", "k", "state"),
        ("EVALSHA", PUBLISH_SHA, 0, b"ch", b"2"),
    ]
    assert len(batch) == 2


def test_commands_queued_while_detached_go_before_the_held_ones() -> None:
    box = Box()
    outbox = box.outbox
    outbox.publish(b"ch", b"buffered")
    held = outbox.detach()
    assert outbox.queued == 0
    outbox.command("HSET", "node", "id", "n1")  # a reconnect hook rewriting presence
    outbox.reattach(held)
    assert box.take_all() == [
        ("HSET", "node", "id", "n1"),
        ("EVALSHA", PUBLISH_SHA, 0, b"ch", b"buffered"),
    ]
