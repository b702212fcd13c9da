"""A Redis Cluster master killed under traffic, seen through official JS clients.

Three ``hubplane serve`` processes on a Redis Cluster of their own (three masters, three
replicas, a 500 ms node timeout). A client on the first node invokes ``Tick`` every 20 ms, which
sends the tick to a group with a member on every node. The master holding the group's channel
is killed (SIGKILL): its replica takes over, every node keeps its clients (no close, no
reconnect), ticks flow again, every tick the sender's node accepted reaches every member
exactly once (none lost, none twice), and presence is whole again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from backplane.redis.slots import key_slot
from tests.e2e.cluster_hubs import HUB_PATH, WIRE_NAME
from tests.e2e.test_cluster import Puppets, eventually, last_tick, start_nodes, ticking_group
from tests.redis_cluster import RedisCluster

pytestmark = pytest.mark.e2e

TICK_MS = 20
#: From the kill to every member receiving ticks again (the failover, then the writers' hold).
RECOVERY_TIMEOUT = 12.0


def test_a_master_killed_under_traffic(
    ha_cluster: RedisCluster, hubplane_server: Any, node_client: Any, record_property: Any
) -> None:
    nodes = start_nodes(hubplane_server, ha_cluster.url, 3)
    urls = [n.hub_url(HUB_PATH) for n in nodes]
    pool = Puppets(node_client.node)
    try:
        g, sender, receivers = ticking_group(pool, urls)
        everyone = [sender, *receivers]
        victim = ha_cluster.slot_owner(key_slot(f"{WIRE_NAME}:group:{g}"))

        def mark() -> int:
            return int(pool.request("tickMark", conn="sender").value)

        started = pool.request(
            "tickStart", conn="sender", method="Tick", args=[g, "$seq"], intervalMs=TICK_MS
        )
        assert started.ok, started
        assert pool.wait_until(lambda: all(last_tick(r) >= 10 for r in receivers), 5.0)

        ha_cluster.kill(victim)
        killed_at = time.monotonic()
        killed_seq = mark()
        recovered = pool.wait_until(
            lambda: all(last_tick(r) > killed_seq + 10 for r in receivers), RECOVERY_TIMEOUT
        )
        assert recovered, f"ticks did not resume: {[last_tick(r) for r in receivers]}"
        resumed_after = time.monotonic() - killed_at
        resumed_seq = mark()
        assert pool.wait_until(
            lambda: all(last_tick(r) >= resumed_seq + 25 for r in receivers), 5.0
        ), "ticks stalled after the failover"
        stopped = pool.request("tickStop", conn="sender", settleMs=3000, timeout=10)
        assert stopped.ok, stopped
        ok_seqs: list[int] = stopped.value["ok"]
        refused = stopped.value["errors"]
        assert pool.wait_until(lambda: all(last_tick(r) >= max(ok_seqs) for r in receivers), 5.0)

        assert not any(p.closes() or p.reconnects() for p in everyone), [
            (p.name, p.closes(), p.reconnects()) for p in everyone
        ]
        stats: dict[str, Any] = {
            "ticks_ok": len(ok_seqs),
            "refused": len(refused),
            "sent_before_the_kill": killed_seq,
            "resumed_after_s": round(resumed_after, 2),
            "receivers": {},
        }
        for r in receivers:
            seqs = [seq for seq, _ in r.ticks()]
            stats["receivers"][r.name] = {
                "lost": len(set(ok_seqs) - set(seqs)),
                "duplicated": len(seqs) - len(set(seqs)),
            }
        print("redis cluster failover:", json.dumps(stats))
        record_property("redis_cluster_failover", json.dumps(stats))
        assert refused == [], refused
        assert all(v == {"lost": 0, "duplicated": 0} for v in stats["receivers"].values()), stats
        assert victim not in ha_cluster.master_ports()
        # Presence is whole again (the nodes rewrite their entries after reconnecting).
        want = {
            "connections": sorted(p.id for p in everyone),
            "groups": {g: sorted(r.id for r in receivers)},
        }

        def snapshot() -> dict[str, Any]:
            s = receivers[1].invoke("PresenceSnapshot", [g], [])
            return {"connections": s["connections"], "groups": s["groups"]}

        eventually(snapshot, lambda s: s == want, 10.0, "presence after the failover")
    finally:
        pool.close()
