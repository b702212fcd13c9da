"""The churn harness' counting (tests/e2e/churn_counting.py), without any process."""

from __future__ import annotations

from typing import Any

from tests.e2e.churn_counting import (
    ClientRecord,
    ClientSpec,
    NodeStream,
    Outcome,
    analyse_client,
    analyse_stream,
    annotate_moves,
    client_table,
    fleet,
    ranges,
    summarise_classes,
    summary_table,
)

PERIOD = 0.05
T0 = 1000.0


def published(last: int) -> dict[int, float]:
    return {s: T0 + s * PERIOD for s in range(1, last + 1)}


def record(seqs: list[int], spec: ClientSpec | None = None, **final: Any) -> ClientRecord:
    r = ClientRecord(spec or ClientSpec("c", stateful=True))
    r.seqs = list(seqs)
    r.arrivals = [T0 + s * PERIOD + 0.01 for s in seqs]
    r.final = {"state": "Connected", "echo": {"sent": 10, "failed": [], "pending": 0}, **final}
    return r


def test_the_window_runs_from_the_first_tick_seen_to_the_last_published() -> None:
    # joined at 5; lost 8 and 9; got 11 twice; the last one (20) published, never received
    seqs = [5, 6, 7, 10, 11, 11, *range(12, 20)]
    c = analyse_client(record(seqs), published(20), 20, T0, PERIOD)
    assert c["first"] == 5
    assert (c["lost"], c["lost_seqs"]) == (3, "8-9,20")
    assert c["duplicated"] == 1
    assert c["connected_at_end"] and not c["receiving_at_end"]
    assert c["failed"] == 0 and not c["id_changed"]


def test_ticks_after_the_end_barrier_do_not_count() -> None:
    c = analyse_client(record(list(range(1, 25))), published(20), 20, T0, PERIOD)
    assert (c["lost"], c["duplicated"], c["received"]) == (0, 0, 20)
    assert c["receiving_at_end"]


def test_failed_and_unanswered_echoes_and_new_ids() -> None:
    r = record(
        list(range(1, 11)),
        echo={"sent": 5, "failed": [[3, "canceled", 0]], "pending": 5},
        state="Reconnecting",
    )
    r.ids = ["a", "b"]
    c = analyse_client(r, published(10), 10, T0, PERIOD)
    assert c["failed"] == 2  # one errored, one still without an answer
    assert c["id_changed"] and not c["connected_at_end"]


def test_silences_and_classes() -> None:
    r = record([1, 2, 3, 9, 10])  # silent from 3 to 9: 0.3 s
    c = analyse_client(r, published(10), 10, T0, PERIOD)
    assert c["max_gap"] == 0.3 and len(c["outages"]) == 1
    plain = analyse_client(
        record([1, 2], ClientSpec("p", "LongPolling")), published(10), 10, T0, PERIOD
    )
    classes = summarise_classes({"s": c, "p": plain})
    assert classes["stateful"]["lost"] == 5
    assert classes["plain/LongPolling"]["stalled"] == 1
    assert classes["plain/LongPolling"]["max_gap_max"] == round(8 * PERIOD - 0.01, 3)


def test_moves_are_counted_for_the_clients_the_node_served() -> None:
    a, b = record([1, 2, 3, 8, 9]), record([1, 2, 3, 4, 5, 6, 7, 8, 9])
    a.nodes = [(T0, 111, "connected"), (T0 + 0.4, 222, "reconnected")]
    b.nodes = [(T0, 222, "connected")]
    fault: dict[str, Any] = {"pid": 111, "signal_at": T0 + 0.16}
    annotate_moves(fault, {"a": a, "b": b}, T0 + 1)
    assert fault["affected"] == ["a"]
    assert fault["move_seconds"] == {"a": 0.25}


def test_fleet_and_ranges() -> None:
    specs = fleet(stateful=3, plain_each=1)
    assert [s.klass for s in specs].count("stateful") == 3
    assert {s.protocol for s in specs if s.stateful} == {"json", "messagepack"}
    assert len(specs) == 3 + 5
    assert ranges([9, 3, 4, 5]) == "3-5,9"


def test_failed_publishes_are_not_lost_and_may_arrive_once() -> None:
    # 5-9 raised (Redis away): never lost; 5 arrived all the same (Redis ran it), not unexpected
    pub = {s: t for s, t in published(20).items() if not 5 <= s <= 9}
    seqs = [1, 2, 3, 4, 5, *range(10, 21)]
    c = analyse_client(record(seqs), pub, 20, T0, PERIOD, failed=range(5, 10))
    assert (c["lost"], c["unexpected"], c["failed_delivered"]) == (0, [], 1)
    # without the failed numbers, 5 would be a tick never published
    assert analyse_client(record(seqs), pub, 20, T0, PERIOD)["unexpected"] == [5]
    # a failed one that arrives twice is still a duplicate
    twice = analyse_client(record([*seqs, 5]), pub, 20, T0, PERIOD, failed=range(5, 10))
    assert twice["duplicated"] == 1


def test_the_node_stream_counts_from_its_first_number() -> None:
    # accepted 1-30 but 12 (refused); the client missed 1-2 (before any tick came), 20, and got
    # 25 twice; the window starts at 1, not at the first one seen
    stream = NodeStream(frozenset(range(1, 31)) - {12}, frozenset({12}), 30)
    r = record(list(range(1, 21)))
    r.node_seqs = [3, 4, 5, *range(6, 20), *range(21, 31), 25]
    c = analyse_client(r, published(20), 20, T0, PERIOD, node=stream)
    assert (c["node_lost"], c["node_lost_seqs"]) == (3, "1-2,20")
    assert (c["node_duplicated"], c["node_out_of_order"]) == (1, 1)
    assert c["node_unexpected"] == [] and c["node_receiving_at_end"]
    classes = summarise_classes({"s": c})
    assert (classes["stateful"]["node_lost"], classes["stateful"]["node_duplicated"]) == (3, 1)
    outcome = Outcome("x", {"s": c}, classes, {}, {}, 0.0)
    assert "node_lost" in summary_table(outcome) and "node_lost_seqs" in client_table(outcome)
    # without a node stream there are no node columns
    plain = analyse_client(record([1, 2]), published(2), 2, T0, PERIOD)
    assert "node_lost" not in plain
    bare = Outcome("y", {"s": plain}, summarise_classes({"s": plain}), {}, {}, 0.0)
    assert "node_lost" not in summary_table(bare)


def test_analyse_stream_with_nothing_received() -> None:
    nothing = analyse_stream([], {1, 2, 3}, 3)
    assert (nothing["lost"], nothing["first"], nothing["receiving_at_end"]) == (0, None, False)
    assert analyse_stream([], {1, 2, 3}, 3, first=1)["lost_seqs"] == "1-3"
