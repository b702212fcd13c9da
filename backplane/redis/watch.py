"""The watcher: a node's task that finds dead nodes by their closed Redis connections.

Every ``heartbeat / 4`` seconds (0.25 s by default) it runs one Lua script (``keys.WATCH``):
Redis's time, every registered node's heartbeat and the subscriber count of each node's own
channel. :class:`~.liveness.DeathRule` judges; the dead are purged by the node (the same
script as the heartbeat's purges, which re-checks the heartbeat atomically). The Redis
server's ``run_id`` is read again after every reconnect of the writer, where these queries go.

On a Redis Cluster the nodes' channels live on their own shards: with sharded pub/sub the
heartbeats come from one script (``keys.NODE_BEATS``) and each channel's count from
``PUBSUB SHARDNUMSUB`` on its shard. With classic pub/sub on a cluster, a count is only
the subscriptions of the one Redis node asked: no count is trusted (every node counts as
connected) and only heartbeats find the dead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .bus import BackplaneUnavailable, RedisBus
from .keys import NODE_BEATS, WATCH
from .liveness import CHECKS_PER_BEAT, DeadNodes, DeathRule, PurgeGuard

logger = logging.getLogger("hubplane.redis")

#: ``purge(node_id, cutoff_ms)``: True when this node purged it.
Purge = Callable[[str, int], Awaitable[bool]]


class NodeWatcher:
    """Checks the nodes' own channels and purges the nodes whose connection closed."""

    def __init__(
        self,
        bus: RedisBus,
        node_id: str,
        nodes_key: bytes,
        channel_start: bytes,
        heartbeat: float,
        timeout: float,
        guard: PurgeGuard,
        deaths: DeadNodes,
        purge: Purge,
    ) -> None:
        self.bus = bus
        self.node_id = node_id
        self.nodes_key = nodes_key
        self.channel_start = channel_start
        self.period = max(0.05, heartbeat / CHECKS_PER_BEAT)
        self.rule = DeathRule(heartbeat, timeout)
        self.guard = guard
        self.deaths = deaths
        self.purge = purge
        self._sha = bus.register_script(NODE_BEATS if bus.cluster else WATCH)
        self._generation = 0  # writer connections so far
        self._known = -1  # the connection whose run_id the rule has

    def reconnected(self) -> None:
        """The writer (re)connected: the Redis server may be another one."""
        self._generation += 1
        self.rule.interrupt()

    async def check(self) -> list[str]:
        """One round: read, judge, purge. Returns the nodes this node purged."""
        bus = self.bus
        generation = self._generation
        if self._known != generation:
            info = await bus.query("INFO", "server")
            self.rule.redis_is(str(info.get("run_id", "")))
            self._known = generation
        if bus.cluster:
            raw = await self._cluster_rows()
        else:
            raw = await bus.query("EVALSHA", self._sha, 1, self.nodes_key, self.channel_start)
        if self._generation != generation:
            return []  # a reconnect in between: these counts may be another server's
        now = int(raw[0])
        rows: list[tuple[str, int, int]] = []
        own: int | None = None
        for i in range(1, len(raw), 3):
            node = raw[i].decode()
            beat, subscribers = int(raw[i + 1]), int(raw[i + 2])
            if node == self.node_id:
                own = beat
            elif subscribers > 0:
                self.deaths.revive(node)
            rows.append((node, beat, subscribers))
        if not self.guard.allows(now, own):
            self.rule.interrupt()
            return []
        purged = []
        for node in self.rule.judge(now, rows, self.node_id):
            if await self.purge(node, now - self.rule.stale_ms):
                purged.append(node)
        return purged

    async def _cluster_rows(self) -> list[Any]:
        """WATCH's reply on a Redis Cluster: ``[now, node, beat, subscribers, ...]``."""
        bus = self.bus
        beats = await bus.query("EVALSHA", self._sha, 1, self.nodes_key)
        nodes = beats[1::2]
        if bus.sharded:
            replies = await asyncio.gather(
                *(bus.query("PUBSUB", "SHARDNUMSUB", self.channel_start + node) for node in nodes)
            )
            counts = [int(reply[1]) for reply in replies]
        else:
            counts = [1] * len(nodes)  # not known: see the module's docstring
        out: list[Any] = [beats[0]]
        for node, beat, count in zip(nodes, beats[2::2], counts, strict=True):
            out += [node, beat, count]
        return out

    async def run(self) -> None:
        """Check every ``period`` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.check()
            except BackplaneUnavailable:
                self.rule.interrupt()
            except Exception:
                logger.exception("checking the nodes' connections failed")
            next_at = max(next_at + self.period, loop.time())
            await asyncio.sleep(next_at - loop.time())
