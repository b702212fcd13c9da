"""This node's figures for the admin API and the dashboard, and the cluster's, read from Redis.

Every second (while the admin API is on) a node samples its counters: connections by hub,
transport and protocol, messages in and out with their rates over the last second, its largest
local groups and its backplane's state. ``/_hubplane/stats`` answers with this node's figures;
with Redis each node also writes them to ``<prefix>hubplane:stats:<node>`` (expiring by itself,
written only while Redis is reachable, so an outage never queues them), and
``/_hubplane/cluster`` reads those of every live node and adds them up.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from backplane.redis.keys import node_stats_key

if TYPE_CHECKING:
    from backplane.redis.node import RedisNode

    from .hubs import HubEndpoint

logger = logging.getLogger("hubplane.admin")

#: Groups each node reports per hub (its largest local ones), and the cluster view shows.
NODE_GROUPS = 50
CLUSTER_GROUPS = 10


class StatsSource(Protocol):
    """What the figures are read from (``Hubplane`` is one)."""

    @property
    def endpoints(self) -> Mapping[str, HubEndpoint]:
        """Every hub by path."""
        ...

    @property
    def redis_node(self) -> RedisNode | None:
        """The Redis backplane, if any."""
        ...

    def backplane_status(self) -> dict[str, Any]:
        """This node's Redis state and counters."""
        ...


def _local_groups(endpoint: HubEndpoint, limit: int) -> list[dict[str, Any]]:
    # Both lifetime managers keep the local members of each group in ``groups``.
    groups = getattr(endpoint.handler.lifetime, "groups", None)
    if not isinstance(groups, dict):
        return []
    largest = heapq.nlargest(limit, ((len(m), g) for g, m in list(groups.items())))
    return [{"group": g, "members": n} for n, g in largest if n]


class NodeStats:
    """Samples this node's counters every second; answers for the node and for the cluster."""

    def __init__(self, source: StatsSource, ttl: float = 5.0) -> None:
        self.source = source
        self.ttl = ttl
        self.started = time.time()
        # path -> (time, messages in, messages out) at the last sample, and the rates since
        self._last: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, tuple[float, float]] = {}

    @property
    def node_id(self) -> str:
        """This node's id, as ``/_hubplane/nodes`` gives it."""
        node = self.source.redis_node
        if node is not None:
            return node.node_id
        for endpoint in self.source.endpoints.values():
            return endpoint.handler.lifetime.presence.node_id
        return ""

    def tick(self) -> None:
        """Called every second: new rates, and this node's figures written to Redis."""
        now = time.monotonic()
        for path, endpoint in self.source.endpoints.items():
            stats = endpoint.handler.stats
            received, sent = stats.messages_received, stats.messages_sent
            last = self._last.get(path)
            if last is not None and now > last[0]:
                elapsed = now - last[0]
                self._rates[path] = (
                    max(0, received - last[1]) / elapsed,
                    max(0, sent - last[2]) / elapsed,
                )
            self._last[path] = (now, received, sent)
        node = self.source.redis_node
        if node is not None and node.bus.connected:
            try:
                blob = orjson.dumps(self.snapshot())
                key = node_stats_key(node.prefix, node.node_id)
                node.bus.command("SET", key, blob, "PX", int(self.ttl * 1000))
            except Exception:
                logger.exception("writing this node's figures to Redis failed")

    def snapshot(self) -> dict[str, Any]:
        """This node's figures now."""
        hubs = []
        for path, endpoint in self.source.endpoints.items():
            handler = endpoint.handler
            by: dict[tuple[str, str], int] = {}
            for connection in list(handler.connections.values()):
                protocol = connection.protocol
                if protocol is not None and not connection.closing:
                    key = (connection.transport, protocol.name)
                    by[key] = by.get(key, 0) + 1
            rate_in, rate_out = self._rates.get(path, (0.0, 0.0))
            hubs.append(
                {
                    "path": path,
                    "connections": sum(by.values()),
                    "by_transport": [
                        {"transport": t, "protocol": p, "connections": n}
                        for (t, p), n in sorted(by.items())
                    ],
                    "messages_in": handler.stats.messages_received,
                    "messages_out": handler.stats.messages_sent,
                    "rate_in": round(rate_in, 2),
                    "rate_out": round(rate_out, 2),
                    "groups": _local_groups(endpoint, NODE_GROUPS),
                }
            )
        now = time.time()
        node = self.source.redis_node
        started = node.started if node is not None else self.started
        return {
            "node": self.node_id,
            "time": now,
            "started": started,
            "uptime": round(now - started, 1),
            "hubs": hubs,
            "backplane": self.source.backplane_status(),
        }

    async def cluster(self) -> dict[str, Any]:
        """Every live node's latest figures (this node's fresh), and the hubs' totals."""
        mine = self.snapshot()
        nodes = [mine]
        missing: list[str] = []
        node = self.source.redis_node
        if node is not None:
            live = sorted(n for n in await node.live_nodes() if n != mine["node"])
            blobs = await asyncio.gather(
                *(node.bus.query("GET", node_stats_key(node.prefix, n)) for n in live)
            )
            for node_id, blob in zip(live, blobs, strict=True):
                try:
                    nodes.append(orjson.loads(blob))
                except (TypeError, orjson.JSONDecodeError):
                    missing.append(node_id)  # admin API off there, or not written yet
        nodes.sort(key=lambda n: str(n.get("node")))
        return {"time": time.time(), "nodes": nodes, "missing": missing, "hubs": totals(nodes)}


def totals(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hubs' figures added up over ``nodes`` (each connection lives on one node, so the
    sum of local group sizes is the cluster's; groups are those in some node's local top)."""
    hubs: dict[str, dict[str, Any]] = {}
    for snapshot in nodes:
        for hub in snapshot.get("hubs", []):
            total = hubs.setdefault(
                hub["path"],
                {
                    "path": hub["path"],
                    "connections": 0,
                    "by": {},
                    "messages_in": 0,
                    "messages_out": 0,
                    "rate_in": 0.0,
                    "rate_out": 0.0,
                    "groups": {},
                },
            )
            for name in ("connections", "messages_in", "messages_out", "rate_in", "rate_out"):
                total[name] += hub.get(name, 0)
            for row in hub.get("by_transport", []):
                key = (row["transport"], row["protocol"])
                total["by"][key] = total["by"].get(key, 0) + row["connections"]
            for row in hub.get("groups", []):
                total["groups"][row["group"]] = (
                    total["groups"].get(row["group"], 0) + row["members"]
                )
    result = []
    for total in hubs.values():
        by = total.pop("by")
        groups = total.pop("groups")
        total["by_transport"] = [
            {"transport": t, "protocol": p, "connections": n} for (t, p), n in sorted(by.items())
        ]
        largest = heapq.nlargest(CLUSTER_GROUPS, ((n, g) for g, n in groups.items()))
        total["groups"] = [{"group": g, "members": n} for n, g in largest]
        total["rate_in"] = round(total["rate_in"], 2)
        total["rate_out"] = round(total["rate_out"], 2)
        result.append(total)
    return result
