"""Issue 17, "Nothing lost when nodes come and go": nodes rolled or killed under traffic.

Three nodes behind nginx round robin (no affinity), a publisher sending ``Tick(seq)`` to a
group 20 times a second, and official JS clients through nginx: stateful WebSocket clients
(json and messagepack) and plain clients on every transport and protocol, all with automatic
reconnect, each echoing one call at a time. The harness (tests/e2e/churn.py) counts, per
client, the ticks lost and duplicated, the failed echoes and the connection ids it had.

- Rolling SIGTERM (each node in turn: drain, exit, start again): a stateful client keeps its
  connection id and loses nothing, gets nothing twice, no call of it fails. Plain clients
  reconnect with a new connection and lose what was published meanwhile: counted, reported.
- SIGKILL of the node serving the most stateful clients: with ``--durable-resume`` its stateful
  clients resume elsewhere, same id, nothing lost or duplicated; without it each either resumed
  (same id) with nothing lost, or started over with a new id. Never a resume that silently
  misses ticks. Again with ``--durable-resume`` on a private Redis Cluster of three masters
  (sharded pub/sub): the same, nothing lost.

Every client must be connected at the end (after the rolling restart also still receiving), and
none may get a tick twice. The totals per class are printed and recorded as JUnit properties
(``churn_rolling``, ``churn_kill``, ``churn_kill_durable``,
``churn_kill_durable_redis_cluster``, ``churn_redis_freeze``,
``churn_redis_kill``).

Redis itself under the same traffic ("Redis SIGSTOP 8 s and SIGKILL 5 s under traffic: 0 lost,
0 duplicated, 0 client disconnects, no live node purged"), with a second publisher: a client of
node 0 invoking ``Publish(group, seq)``, so ``NodeTick(seq)`` leaves through that node's outbox.

- Redis frozen (SIGSTOP) for 8 s, longer than the presence timeout (2 s), then SIGCONT;
- Redis killed (SIGKILL) and started again, empty, after 5 s.

For every client, stateful and plain: nothing lost of what was published (the Emitter's sends
that raised while Redis was away are "not published", counted apart and never retried; every
``Publish`` the node accepted), nothing twice, no reconnect, no close, no new connection id, no
stateful resume (its WebSocket never dropped). No live node purged: every node's purged_nodes
counter is 0, no log line says one purged another, the nodes ZSET in Redis never lacked a node
once it held them all, and every node lists all three at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.churn import (
    ChurnOptions,
    Outcome,
    client_table,
    fleet,
    freeze_redis,
    kill_busiest,
    kill_redis,
    roll,
    run_scenario,
    serve_supports,
    summary_table,
)

pytestmark = pytest.mark.e2e

#: 6 stateful WebSocket clients (json, messagepack) and one plain client of every transport
#: and protocol: 11 clients.
SPECS = fleet(stateful=6, plain_each=1)


def report(outcome: Outcome, record_property: Any, key: str) -> None:
    print(f"\n{outcome.scenario} ({outcome.seconds} s): {json.dumps(outcome.publisher)}")
    print(summary_table(outcome))
    print(client_table(outcome))
    print(json.dumps(outcome.fault, indent=1))
    if outcome.purges:
        print("purges:", json.dumps(outcome.purges, indent=1))
    record_property(key, json.dumps(outcome.summary()))


def common_problems(outcome: Outcome, stalled_fails: bool = True) -> list[str]:
    """What no client may show: not connected at the end, duplicates, ticks never published,
    connected but no longer receiving (a plain client that stalled is only printed unless
    ``stalled_fails``)."""
    problems = []
    for name, c in outcome.clients.items():
        if not c["connected_at_end"]:
            problems.append(
                f"{name} ({c['class']}) is not connected at the end: {c['final_state']}"
            )
        elif not c["receiving_at_end"]:
            stalled = (
                f"{name} ({c['class']}) says it is connected but stopped receiving: lost "
                f"{c['lost_seqs']}, {c['failed']} failed invocations {c['failures'][:1]}"
            )
            if stalled_fails or c["class"] == "stateful":
                problems.append(stalled)
            else:
                print("NOTE (reported, not failed):", stalled)
        if c["duplicated"]:
            problems.append(f"{name} ({c['class']}) got {c['duplicated']} ticks twice")
        if c["unexpected"]:
            problems.append(f"{name} ({c['class']}) got ticks never published: {c['unexpected']}")
    return problems


def untouched(name: str, c: dict[str, Any]) -> list[str]:
    """A stateful client must lose nothing, fail no call and keep its connection id."""
    problems = []
    if c["lost"]:
        problems.append(f"{name} (stateful) lost {c['lost']} ticks: {c['lost_seqs']}")
    if c["failed"]:
        problems.append(f"{name} (stateful) had {c['failed']} failed invocations: {c['failures']}")
    if c["id_changed"]:
        problems.append(
            f"{name} (stateful) changed its connection id {len(c['ids']) - 1} times "
            f"(its resume was refused and it started over): {c['ids']}"
        )
    return problems


def test_rolling_sigterm_loses_nothing_for_stateful_clients(
    tmp_path: Path, node_client: Any, record_property: Any
) -> None:
    outcome = run_scenario(
        "rolling SIGTERM", tmp_path, roll(pause=1.0), specs=SPECS, node=node_client.node
    )
    report(outcome, record_property, "churn_rolling")
    problems = common_problems(outcome)
    for name, c in outcome.clients.items():
        if c["class"] == "stateful":
            problems += untouched(name, c)
    assert not problems, "\n".join(problems) + "\n" + summary_table(outcome)


@pytest.mark.parametrize(
    ("durable", "redis_cluster"),
    [(True, False), (False, False), (True, True)],
    ids=["durable-resume", "plain-resume", "durable-resume-redis-cluster"],
)
def test_sigkill_of_a_node(
    tmp_path: Path, node_client: Any, record_property: Any, durable: bool, redis_cluster: bool
) -> None:
    if durable and not serve_supports("--durable-resume"):
        pytest.skip(
            "`hubplane serve --help` lists no --durable-resume yet (issue 17): this test runs "
            "as soon as the flag exists"
        )
    options = ChurnOptions(
        extra_args=("--durable-resume",) if durable else (), redis_cluster=redis_cluster
    )
    outcome = run_scenario(
        "SIGKILL" + (" --durable-resume" if durable else "") + (" (Redis Cluster)" * redis_cluster),
        tmp_path,
        kill_busiest(),
        specs=SPECS,
        options=options,
        node=node_client.node,
    )
    key = "churn_kill_durable" if durable else "churn_kill"
    report(outcome, record_property, key + ("_redis_cluster" if redis_cluster else ""))
    killed = set(outcome.fault["clients_of_killed"])
    assert any(outcome.clients[n]["class"] == "stateful" for n in killed), outcome.fault
    # A plain long-polling client of the killed node can hang on a poll forwarded to the dead
    # node (today up to the poll timeout): reported, not failed; its stateful peers are what
    # this test is about.
    problems = common_problems(outcome, stalled_fails=False)
    for name, c in outcome.clients.items():
        if c["class"] != "stateful":
            continue  # plain clients of the killed node start over: counted, reported
        if name not in killed:
            problems += untouched(name, c)  # its node lived: nothing may happen to it
        elif durable:
            if c["id_changed"]:
                problems.append(
                    f"{name} (stateful, on the killed node) did not resume elsewhere: "
                    f"connection ids {c['ids']}"
                )
            if c["lost"]:
                problems.append(
                    f"{name} (stateful, on the killed node) lost {c['lost']} ticks: "
                    f"{c['lost_seqs']}"
                )
        elif not c["id_changed"] and c["lost"]:
            problems.append(
                f"{name} (stateful, on the killed node) resumed with the same connection id "
                f"but lost {c['lost']} ticks: {c['lost_seqs']}"
            )
    assert not problems, "\n".join(problems) + "\n" + summary_table(outcome)


# --------------------------------------------------------------------------- Redis faults


def redis_fault_problems(outcome: Outcome, data_lost: bool) -> list[str]:
    """What a Redis outage may not do to any client, to the node publisher, or to presence."""
    problems = common_problems(outcome)
    for name, c in outcome.clients.items():
        who = f"{name} ({c['class']})"
        if c["lost"]:
            problems.append(f"{who} lost {c['lost']} published Ticks: {c['lost_seqs']}")
        if c["node_lost"]:
            problems.append(
                f"{who} lost {c['node_lost']} NodeTicks the node accepted: {c['node_lost_seqs']}"
            )
        if c["node_duplicated"]:
            problems.append(f"{who} got {c['node_duplicated']} NodeTicks twice")
        if c["node_unexpected"]:
            problems.append(f"{who} got NodeTicks never accepted: {c['node_unexpected']}")
        if c["id_changed"] or c["reconnects"] or c["closed"]:
            record = outcome.records.get(name)
            errors = [e["error"] for e in record.kinds("conn") if e.get("error")] if record else []
            problems.append(
                f"{who} was disconnected: {c['reconnects']} reconnects, closed={c['closed']}, "
                f"connection ids {c['ids']}; errors {errors[:2]}"
            )
        if c["resumes"]:
            problems.append(f"{who}'s WebSocket dropped: {c['resumes']} stateful resumes")
        if c["failed"]:
            failures = f"{c['failed']} failed Echo calls: {c['failures'][:2]}"
            if c["class"] == "stateful":
                problems.append(f"{who} had {failures}")
            else:
                print(f"NOTE (reported, not failed): {who} had {failures}")
    node = outcome.publisher.get("node") or {}
    if node.get("ended_early"):
        problems.append(f"the node publisher's connection ended: {node['ended_early']}")
    if node.get("failed"):
        problems.append(
            f"node 0 refused {node['failed']} Publish calls (it buffers them): "
            f"{node['failed_seqs']}"
        )
    for name, evidence in outcome.purges.items():
        if evidence["purged_nodes"] or evidence["lines"]:
            problems.append(
                f"{name} ({evidence['node']}) purged {evidence['purged_nodes']} live nodes "
                f"(reregistrations {evidence['reregistrations']}): {evidence['lines'][:3]}"
            )
    presence = outcome.fault["presence"]
    # Data kept, a node missing from the ZSET was purged; data lost, it is missing until it
    # registers again, and missing after that was purged.
    absent = presence["absent_after_back"] if data_lost else presence["absent"]
    if absent:
        problems.append(f"live nodes missing from the nodes ZSET after the fault: {absent}")
    if presence["all_back_seconds"] is None:
        problems.append(f"the nodes ZSET never held all three nodes again: {presence}")
    ids = sorted(outcome.fault["node_ids"])
    for name, listed in outcome.fault["listed_after"].items():
        if listed != ids:
            problems.append(f"{name} lists {listed} as live nodes, not {ids}")
    if outcome.fault["recovered_seconds"] is None:
        problems.append("the nodes did not all report Redis connected and their outbox empty")
    return problems


def run_redis_fault(
    tmp_path: Path, node_client: Any, record_property: Any, name: str, key: str, action: Any
) -> Outcome:
    outcome = run_scenario(
        name,
        tmp_path,
        action,
        specs=SPECS,
        options=ChurnOptions(),  # presence timeout 2 s, heartbeat 0.5 s
        settle=1.0,
        node=node_client.node,
        node_publisher=True,
    )
    report(outcome, record_property, key)
    print("publishers:", json.dumps(outcome.publisher))
    print("backplane:", json.dumps(outcome.summary()["backplane"]))
    return outcome


def test_redis_frozen_for_8_s_loses_nothing_and_disconnects_nobody(
    tmp_path: Path, node_client: Any, record_property: Any
) -> None:
    outcome = run_redis_fault(
        tmp_path,
        node_client,
        record_property,
        "Redis SIGSTOP 8 s",
        "churn_redis_freeze",
        freeze_redis(8.0),
    )
    # The Emitter found Redis silent within its reply timeout (2.5 s) and said so, then
    # published again.
    pub = outcome.publisher
    assert pub["failed"] > 0 and pub["failed_in_seconds"]["max"] < 4.0, pub
    assert pub["last"] > pub["last_failed"], pub
    problems = redis_fault_problems(outcome, data_lost=False)
    assert not problems, "\n".join(problems) + "\n" + summary_table(outcome)


def test_redis_killed_for_5_s_loses_nothing_and_disconnects_nobody(
    tmp_path: Path, node_client: Any, record_property: Any
) -> None:
    outcome = run_redis_fault(
        tmp_path,
        node_client,
        record_property,
        "Redis SIGKILL 5 s",
        "churn_redis_kill",
        kill_redis(5.0),
    )
    # The Emitter's sends failed fast while Redis was gone, and went out again after.
    pub = outcome.publisher
    assert pub["failed"] > 0 and pub["failed_in_seconds"]["max"] < 1.0, pub
    assert pub["last"] > pub["last_failed"], pub
    problems = redis_fault_problems(outcome, data_lost=True)
    assert not problems, "\n".join(problems) + "\n" + summary_table(outcome)
