"""Stateful reconnect's MessageBuffer on its own: no connection, no socket, no event loop."""

from __future__ import annotations

from backplane.stateful import MessageBuffer


def test_outgoing_messages_are_numbered_and_kept_until_acknowledged() -> None:
    buffer = MessageBuffer(limit=100)
    for data in (b"a", b"bb", b"ccc"):
        assert buffer.track(data)
    assert [n for n, _ in buffer.replay] == [1, 2, 3]
    assert buffer.size == 6
    buffer.ack(2)
    assert list(buffer.replay) == [(3, b"ccc")] and buffer.size == 3
    buffer.ack(2)  # an old ack changes nothing
    assert buffer.size == 3
    buffer.ack(9)  # past the end: everything is acknowledged
    assert not buffer.replay and buffer.size == 0


def test_track_reports_a_replay_over_its_limit() -> None:
    buffer = MessageBuffer(limit=5)
    assert buffer.track(b"12345")
    assert not buffer.track(b"6")
    buffer.ack(2)
    assert buffer.track(b"7")


def test_resume_starts_at_the_first_unacknowledged_message() -> None:
    buffer = MessageBuffer()
    for data in (b"1", b"2", b"3"):
        buffer.track(data)
    buffer.ack(1)
    first, backlog = buffer.resume()
    assert first == 2 and list(backlog) == [b"2", b"3"]
    buffer.ack(3)
    first, backlog = buffer.resume()
    assert first == 4 and list(backlog) == []  # the next message the server sends


def test_incoming_messages_are_counted_and_acknowledged_once() -> None:
    buffer = MessageBuffer()
    assert buffer.ack_due() is None
    assert buffer.accept() and buffer.accept()
    assert buffer.ack_due() == 2
    assert buffer.ack_due() is None  # nothing new since
    assert buffer.accept()
    assert buffer.ack_due() == 3


def test_after_a_drop_nothing_counts_before_the_clients_sequence() -> None:
    buffer = MessageBuffer()
    for _ in range(3):
        assert buffer.accept()
    buffer.detached()
    assert not buffer.accept()  # stale: sent before the client knew of the reconnect
    assert buffer.sequence(2)  # the client replays from its message 2
    assert not buffer.accept()  # 2: handled already
    assert not buffer.accept()  # 3: handled already
    assert buffer.accept()  # 4: new
    assert buffer.received == 4


def test_a_sequence_past_what_was_received_is_refused() -> None:
    buffer = MessageBuffer()
    buffer.accept()
    assert not buffer.sequence(3)  # message 2 would be lost
    assert buffer.sequence(2)
