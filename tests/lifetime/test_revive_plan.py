"""What a node taking over a dead node's connection delivers from history, or refuses (sans-I/O).

``backplane/redis/revive.py``'s plan: per channel, what each publisher published after the
position the record holds, linked by ``prev`` numbers; a break, or history trimmed past what
is needed, refuses the resume.
"""

from __future__ import annotations

import msgpack
import pytest

from backplane.redis import wire
from backplane.redis.revive import (
    History,
    Record,
    Refused,
    check_record,
    parse_history,
    parse_record,
    plan,
)

ALL = b"p:all"
ROOM = b"p:group:room"


def record(positions: dict[bytes, dict[str, int]] | None = None, **kw: object) -> Record:
    fields: dict[str, object] = {
        "connection_id": "c1",
        "hub": "/h",
        "user": "",
        "node": "n1",
        "durable": "n1",
        "protocol": "json",
        "sent": 3,
        "trimmed": 1,
        "acked": 0,
        "groups": ["room"],
        "since": {ALL: (1000, 0), ROOM: (1000, 0)},
        "log": [(2, b"b"), (3, b"c")],
        "positions": positions or {},
        "at": 5000,
    }
    fields.update(kw)
    return Record(**fields)  # type: ignore[arg-type]


def entry(ms: int, origin: str, seq: int, prev: int, **kw: object) -> tuple[int, int, bytes]:
    data = wire.write_invocation(
        {"json": f"{origin}{seq}".encode()}, origin=origin, seq=seq, prev=prev, **kw
    )  # type: ignore[arg-type]
    return ms, 0, data


def history(*entries: tuple[int, int, bytes], first_kept: int | None = None) -> History:
    rows = [(f"{ms}-{n}".encode(), {b"m": data}) for ms, n, data in entries]
    info: dict[bytes, object] = {}
    if entries:
        info = {
            b"length": len(entries),
            b"entries-added": len(entries),
            b"first-entry": [rows[0][0], []],
        }
    if first_kept is not None:
        info[b"entries-added"] = len(entries) + 5
        info[b"first-entry"] = [f"{first_kept}-0".encode(), []]
    return parse_history(rows, info)


def delivered(result_messages: list[tuple[bytes, wire.RedisInvocation]]) -> list[bytes]:
    return [inv.payloads["json"] for _, inv in result_messages]


def test_past_the_position_in_stream_order_across_channels() -> None:
    rec = record({ROOM: {"a": 5}, ALL: {"b": 1}})
    histories = {
        ROOM: history(entry(1100, "a", 5, 4), entry(1200, "a", 7, 5), entry(1400, "a", 9, 7)),
        ALL: history(entry(1300, "b", 8, 1)),
    }
    result = plan("c1", rec, histories)
    assert delivered(result.messages) == [b"a7", b"b8", b"a9"]
    assert result.delivered[ROOM]["a"] == 9 and result.delivered[ALL]["b"] == 8


def test_copies_excluded_and_client_results_are_skipped_but_keep_the_chain() -> None:
    rec = record({ROOM: {"a": 5}})
    histories = {
        ROOM: history(
            entry(1100, "a", 6, 5),
            entry(1101, "a", 6, 5),  # a retried publish, kept twice
            entry(1200, "a", 7, 6, excluded=["c1"]),
            entry(1300, "a", 8, 7),
        ),
        ALL: history(entry(1250, "x", 3, 0, invocation_id="1", return_channel="r")),
    }
    assert delivered(plan("c1", rec, histories).messages) == [b"a6", b"a8"]


def test_a_break_in_the_numbers_refuses() -> None:
    rec = record({ROOM: {"a": 5}})
    histories = {ROOM: history(entry(1100, "a", 6, 5), entry(1300, "a", 9, 7))}
    with pytest.raises(Refused, match="after #6 up to #7"):
        plan("c1", rec, histories)
    # ... also right after the position
    with pytest.raises(Refused, match="after #5 up to #6"):
        plan("c1", rec, {ROOM: history(entry(1300, "a", 9, 6))})


def test_a_publisher_that_forgot_the_channel_or_is_new_links_with_zero() -> None:
    rec = record({ROOM: {"a": 5}})
    histories = {ROOM: history(entry(1100, "a", 50, 0), entry(1200, "new", 1, 0))}
    assert delivered(plan("c1", rec, histories).messages) == [b"a50", b"new1"]


def test_an_unknown_publishers_earlier_message_must_be_before_the_join() -> None:
    # Nothing delivered from "a" here; its first message after the join names an earlier one.
    rec = record({})
    whole = {ROOM: history(entry(1100, "a", 9, 4))}
    assert delivered(plan("c1", rec, whole).messages) == [b"a9"]  # #4 came before the join
    trimmed = {ROOM: history(entry(1100, "a", 9, 4), first_kept=1100)}
    with pytest.raises(Refused, match="no longer in the history"):
        plan("c1", rec, trimmed)  # #4 may have been trimmed after the join


def test_history_trimmed_past_the_last_record_refuses() -> None:
    rec = record({ROOM: {"a": 5}}, at=1000)
    with pytest.raises(Refused, match="trimmed past"):
        plan("c1", rec, {ROOM: history(entry(1100, "a", 6, 5), first_kept=1100)})


def test_records_with_holes_or_from_another_node_are_refused() -> None:
    check_record(record(), "n1")
    with pytest.raises(Refused, match="not recorded"):
        check_record(record(durable=""), "n1")
    with pytest.raises(Refused, match="written by"):
        check_record(record(durable="n0"), "n1")
    with pytest.raises(Refused, match="does not hold every message"):
        check_record(record(log=[(3, b"c")]), "n1")
    with pytest.raises(Refused, match="does not hold every message"):
        check_record(record(sent=4), "n1")


def test_parse_record_reads_what_the_record_script_writes() -> None:
    raw = {
        b"id": b"c1",
        b"hub": b"/h",
        b"user": b"",
        b"node": b"n1",
        b"durable": b"n1",
        b"protocol": b"json",
        b"sent": b"3",
        b"trimmed": b"1",
        b"acked": b"2",
        b"groups": msgpack.packb(["room"]),
        b"since:" + ROOM: b"1000-0",
        b"at": b"5000",
    }
    log = [msgpack.packb([3, b"c"]), msgpack.packb([2, b"b"])]
    rec = parse_record(raw, log, {ROOM + b"\0a": b"5"})
    assert rec.log == [(2, b"b"), (3, b"c")]
    assert rec.positions == {ROOM: {"a": 5}}
    assert rec.since == {ROOM: (1000, 0)} and rec.groups == ["room"] and rec.acked == 2
    with pytest.raises(Refused, match="no resume entry"):
        parse_record({}, [], {})
