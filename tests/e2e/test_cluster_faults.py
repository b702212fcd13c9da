"""A Redis outage under steady cross-node traffic.

Three nodes share a PRIVATE Redis (stopping it must not disturb the other tests). A JS client
on node 1 invokes ``Tick(group, seq)`` every 20 ms; the group has a member on each node, in
both protocols. Redis is stopped for about two seconds and started again, empty (it runs with
``--save ""``). Expected:

- no client is closed or reconnected: a Redis outage is not a client outage;
- group changes made during the outage end quickly (a local join works and its subscription
  comes back; a remote add succeeds or fails, but does not hang);
- ticks flow again, every node hears every other again, presence is whole again (every node
  re-registers its connections) and remote group adds work again;
- no tick is lost before the outage, none is lost at a receiver once that receiver has seen
  its first tick sent after Redis went down (from then on its node is subscribed and the
  sender's node publishes in order), and none sent ``REDIS_BACK_GRACE`` after Redis is back.
  Ticks sent while Redis was down are buffered by the sending node (``--redis-buffer``) and
  flushed after its reconnect; those a receiving node still missed (it was not subscribed
  again yet) are counted and reported (printed, and a ``redis_outage`` property in the
  JUnit XML), not failed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer, get_free_port
from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.test_cluster import (
    PRESENCE_HEARTBEAT,
    PRESENCE_TIMEOUT,
    Puppet,
    Puppets,
    eventually,
    last_tick,
    start_nodes,
    ticking_group,
    unique,
)

pytestmark = pytest.mark.e2e

TICK_MS = 20
OUTAGE_SECONDS = 2.0
#: From Redis answering PING again to every receiver seeing ticks again.
RECOVERY_TIMEOUT = 8.0
#: A group add for a connection of another node, made while Redis is down, must end (done
#: or failed) within this many seconds: not hang for the 30 s ack timeout.
OFFLINE_ADD_BOUND = OUTAGE_SECONDS + 3.0
#: Ticks sent this long after Redis answers again must reach every receiver. Each node
#: reconnects on its own schedule and pub/sub keeps nothing for a node not subscribed yet,
#: so a tick published between the first and the last node's reconnect can miss the late
#: ones; 0 would demand that nothing is lost once Redis is up.
REDIS_BACK_GRACE = 0.5


@pytest.fixture
def private_redis(tmp_path: Path) -> Any:
    """A Redis of this test only (conftest's RedisServer fails the test without redis-server)."""
    server = RedisServer(tmp_path, port=get_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _until_every_node_hears_every_node(
    pool: Puppets, receivers: list[Puppet], timeout: float
) -> int:
    """Each receiver broadcasts a probe, again and again, until every receiver hears every
    probe of one round (a probe published while a node was not subscribed is gone for good).
    Returns the number of rounds it took."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        rounds += 1
        probes = [unique(f"probe{rounds}") for _ in receivers]
        for r, probe in zip(receivers, probes, strict=True):
            r.invoke("SendAll", probe)

        def heard() -> bool:
            return all(r.count("all", p) for r in receivers for p in probes)  # noqa: B023

        if pool.wait_until(heard, min(0.5, max(0.0, deadline - time.monotonic()))):
            return rounds
        if time.monotonic() >= deadline:
            missing = {r.name: [p for p in probes if not r.count("all", p)] for r in receivers}
            raise AssertionError(f"nodes still do not hear each other after {timeout}s: {missing}")


def _ranges(seqs: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5,9"`` (for the report)."""
    out: list[str] = []
    for s in sorted(seqs):
        if out and int(out[-1].split("-")[-1]) == s - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
    return ",".join(out)


ADMIN = "outage-admin-token"


def backplane_of(base_url: str) -> dict[str, Any]:
    """A node's own account of its Redis traffic (``GET /_hubplane/backplane``)."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/_hubplane/backplane",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_redis_outage_under_steady_traffic(
    private_redis: RedisServer, hubplane_server: Any, node_client: Any, record_property: Any
) -> None:
    nodes = start_nodes(hubplane_server, private_redis.url, 3, extra=("--admin-token", ADMIN))
    urls = [n.hub_url(HUB_PATH) for n in nodes]
    pool = Puppets(node_client.node)
    try:
        g, sender, receivers = ticking_group(pool, urls)
        everyone = [sender, *receivers]
        assert len({p.pid for p in receivers}) == 3

        want = {
            "connections": sorted(p.id for p in everyone),
            "groups": {g: sorted(r.id for r in receivers)},
            "nodes": 3,
        }

        def whole(observer: Puppet) -> dict[str, Any]:
            s = observer.invoke("PresenceSnapshot", [g], [])
            return {
                "connections": s["connections"],
                "groups": s["groups"],
                "nodes": len(s["nodes"]),
            }

        for r in receivers:
            eventually(lambda r=r: whole(r), lambda s: s == want, 5.0, f"presence from {r.name}")

        def mark() -> int:
            return int(pool.request("tickMark", conn="sender").value)

        started = pool.request(
            "tickStart", conn="sender", method="Tick", args=[g, "$seq"], intervalMs=TICK_MS
        )
        assert started.ok, started
        assert pool.wait_until(lambda: all(last_tick(r) >= 10 for r in receivers), 5.0), (
            f"ticks did not flow before the outage: {[r.ticks()[-3:] for r in receivers]}"
        )

        # --- the outage ---------------------------------------------------------------
        outage_seq = mark()  # every tick up to here was sent while Redis was up
        private_redis.stop()
        down_at = time.monotonic()
        stopped_seq = mark()
        # group changes while Redis is down: a local one, whose subscription must come back,
        # and one for a connection of another node, which must end quickly either way
        h_local, h_remote = unique("joined-offline"), unique("added-offline")
        join_offline = receivers[1].call_later("Join", h_local)
        add_offline = receivers[0].call_later("AddToGroup", receivers[2].id, h_remote)

        def client_trouble() -> bool:
            return any(p.closes() or p.reconnects() for p in everyone)

        # waiting for trouble that must not come is the outage itself
        assert not pool.wait_until(client_trouble, OUTAGE_SECONDS - (time.monotonic() - down_at)), (
            f"a client was dropped while Redis was down: "
            f"{[(p.name, p.closes(), p.reconnects()) for p in everyone]}"
        )
        private_redis.start()
        back_at = time.time()  # the driver's tick times are wall-clock milliseconds too
        restart_seq = mark()

        # --- recovery ---------------------------------------------------------------------
        recovered = pool.wait_until(
            lambda: all(last_tick(r) > restart_seq for r in receivers), RECOVERY_TIMEOUT
        )
        assert recovered, (
            f"ticks did not reach every node within {RECOVERY_TIMEOUT}s of the restart: "
            f"last seen {[last_tick(r) for r in receivers]}, restart at {restart_seq}"
        )
        joined = join_offline.result(timeout=5)
        assert joined.ok, f"joining a group on the own node while Redis was down: {joined}"
        added = add_offline.result(timeout=OFFLINE_ADD_BOUND + 1)
        assert added.ms <= OFFLINE_ADD_BOUND * 1000, (
            f"a remote group add made while Redis was down took {added.ms} ms: {added}"
        )
        rounds = _until_every_node_hears_every_node(pool, receivers, RECOVERY_TIMEOUT)
        for r in receivers:  # presence lost everything with Redis: it must be rebuilt
            eventually(
                lambda r=r: whole(r),
                lambda s: s == want,
                PRESENCE_TIMEOUT + 4 * PRESENCE_HEARTBEAT + 2,
                f"presence after the restart, from {r.name}",
            )
        assert receivers[2].invoke("PresenceGroupMembers", h_local) == [receivers[1].id]
        # the subscription made while Redis was down works, and so does the remote add if
        # it succeeded
        payload = unique("joined-offline")
        receivers[2].invoke("SendGroup", h_local, payload)
        receivers[1].wait_for("group", payload)
        if added.ok:
            payload = unique("added-offline")
            receivers[1].invoke("SendGroup", h_remote, payload)
            receivers[2].wait_for("group", payload)
        # group membership changes cross nodes again, promptly
        h = unique("after")
        add = receivers[0].call("AddToGroup", receivers[2].id, h)
        assert add.ok and add.ms < 1500, f"a remote group add after the recovery: {add}"
        payload = unique("after-restart")
        receivers[1].invoke("SendGroup", h, payload)
        receivers[2].wait_for("group", payload)

        resumed_seq = mark()
        assert pool.wait_until(
            lambda: all(last_tick(r) >= resumed_seq + 25 for r in receivers), 5.0
        ), "ticks stalled after the recovery"
        stopped = pool.request("tickStop", conn="sender", settleMs=3000, timeout=10)
        assert stopped.ok, stopped
        report = stopped.value
        ok_seqs: list[int] = report["ok"]
        failed_seqs = [seq for seq, _ in report["errors"]]
        last_ok = max(ok_seqs)
        assert pool.wait_until(lambda: all(last_tick(r) >= last_ok for r in receivers), 5.0), (
            "the last ticks did not arrive"
        )

        # --- accounting -------------------------------------------------------------------
        assert not client_trouble(), [(p.name, p.closes(), p.reconnects()) for p in everyone]
        stats: dict[str, Any] = {
            "issued": report["issued"],
            "ok": len(ok_seqs),
            "refused": len(failed_seqs),
            "refused_errors": sorted({e for _, e in report["errors"]})[:5],
            "pending_at_stop": report["pending"],
            # ticks sent while Redis was stopping, and once it was down until it answered again
            "stopping_seqs": [outage_seq + 1, stopped_seq],
            "down_seqs": [stopped_seq + 1, restart_seq],
            "receivers": {},
        }
        problems: list[str] = []
        for r in receivers:
            seqs = [seq for seq, _ in r.ticks()]
            got = set(seqs)
            lost = sorted(set(ok_seqs) - got)
            # the first tick this receiver saw of those sent once Redis was surely down
            first_after = min((s for s in got if s > stopped_seq), default=None)
            assert first_after is not None
            lost_before = [s for s in lost if s <= outage_seq]
            lost_after_resubscribe = [s for s in lost if s > first_after]
            stats["receivers"][r.name] = {
                "node_pid": r.pid,
                "delivered": len(got & set(ok_seqs)),
                "lost": len(lost),
                "lost_seqs": _ranges(lost),
                "duplicates": len(seqs) - len(got),
                "first_after_outage": first_after,
                "unexpected": sorted(got - set(ok_seqs) - set(failed_seqs)),
            }
            if lost_before:
                problems.append(f"{r.name} lost ticks sent before the outage: {lost_before}")
            if lost_after_resubscribe:
                problems.append(
                    f"{r.name} lost ticks after it was receiving again (from {first_after}): "
                    f"{_ranges(lost_after_resubscribe)}"
                )
            if len(seqs) != len(got):
                problems.append(f"{r.name} got {len(seqs) - len(got)} duplicate ticks")
            if stats["receivers"][r.name]["unexpected"]:
                problems.append(f"{r.name} got ticks never sent: {stats['receivers'][r.name]}")
        # every tick sent once Redis was back (and the nodes had had time to see it)
        issued_at = {seq: ms / 1000 for seq, ms in report["issuedAt"]}
        after_back = [s for s in ok_seqs if issued_at[s] >= back_at]
        late = [s for s in after_back if issued_at[s] >= back_at + REDIS_BACK_GRACE]
        stats["sent_after_redis_back"] = len(after_back)
        for r in receivers:
            got = {seq for seq, _ in r.ticks()}
            missed = [s for s in after_back if s not in got]
            stats["receivers"][r.name]["lost_after_redis_back"] = _ranges(missed)
            missed_late = [s for s in late if s not in got]
            if missed_late:
                problems.append(
                    f"{r.name} lost ticks sent {REDIS_BACK_GRACE}s or more after Redis was "
                    f"back: {_ranges(missed_late)}"
                )
        all_back = max(v["first_after_outage"] for v in stats["receivers"].values())
        stats["all_receiving_from"] = all_back
        stats["sent_while_redis_down"] = restart_seq - stopped_seq
        stats["probe_rounds_until_all_nodes_hear_each_other"] = rounds
        stats["remote_group_add_while_down"] = {
            "ok": added.ok,
            "error": added.error,
            "ms": added.ms,
        }
        # What each node says it buffered, dropped and reconnected (the admin API).
        stats["nodes"] = {f"n{i}": backplane_of(n.url) for i, n in enumerate(nodes)}
        sender_node = stats["nodes"]["n0"]
        if sender_node["buffered"] < 1 or sender_node["dropped"] != 0:
            problems.append(
                f"the sender's node should have buffered and not dropped: {sender_node}"
            )
        if not all(v["connected"] and v["reconnects"] >= 1 for v in stats["nodes"].values()):
            problems.append("every node should be connected again after reconnecting")
        print("redis outage:", json.dumps(stats, indent=1))
        record_property("redis_outage", json.dumps(stats))
        assert not problems, "\n".join(problems) + "\n" + json.dumps(stats, indent=1)
        refused_late = [s for s in failed_seqs if s >= all_back]
        assert not refused_late, (
            f"ticks sent after the recovery were refused: {report['errors'][-5:]}"
        )
    finally:
        pool.close()
