"""Which nodes are dead, and when a node may say so: the rules, sans-I/O.

Two signals show that a node died (``docs/operations.md``, "When a node dies"):

- **its connection** (fast): every node subscribes to a channel of its own,
  ``<prefix>hubplane:node:<id>``, on its subscriber connection. A killed process's sockets
  are closed by its kernel at once, so Redis counts no subscriber on that channel any more
  (``PUBSUB NUMSUB``). :class:`DeathRule` turns those counts into verdicts.
- **its heartbeat** (slow, always there): a score older than the presence timeout. A node
  cut off from Redis but alive keeps its TCP connections counted for a long time, so only
  this signal judges it.

A live node must never be purged because Redis (or this node) stalled: :class:`PurgeGuard`
says when this node's view of the heartbeats can be trusted. :class:`DeadNodes` keeps the
verdicts for a while and tells the waiters (client results, forwarded requests).

All times here are Redis's (``TIME``, in milliseconds), as the heartbeat scores are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

logger = logging.getLogger("hubplane.redis")

#: How many checks in a row must count no subscriber before a node is dead.
ZERO_CHECKS = 2
#: A node's heartbeat must also be older than this many heartbeat intervals.
STALE_BEATS = 1.25
#: Checks of the nodes' channels per heartbeat interval.
CHECKS_PER_BEAT = 4


def recent_ms(heartbeat: float, timeout: float) -> int:
    """How old this node's own last heartbeat may be for its view to count as steady.

    Half the timeout, but at least one and a half heartbeats (a beat is normally one
    interval old), and never more than the timeout.
    """
    return int(min(timeout, max(timeout / 2, 1.5 * heartbeat)) * 1000)


class PurgeGuard:
    """Whether this node may purge others now.

    When Redis was frozen (or this node stalled, or lost its connection) for a while, every
    other node's heartbeat looks old the moment Redis answers again, though they are all
    alive: their beats are queued behind ours. So a node purges only while its own previous
    heartbeat is recent; after a gap (or a reconnect) it waits one presence timeout, time for
    every live node to beat again, before it purges anyone.
    """

    __slots__ = ("hold_ms", "hold_until", "recent_ms", "_reconnected")

    def __init__(self, recent_ms: int, hold_ms: int) -> None:
        self.recent_ms = recent_ms
        self.hold_ms = hold_ms
        #: Redis time (ms) before which nothing is purged.
        self.hold_until = 0
        self._reconnected = False

    def reconnected(self) -> None:
        """The writer connected again: distrust the heartbeats for a while."""
        self._reconnected = True

    def allows(self, now_ms: int, own_ms: int | None) -> bool:
        """True when purging is safe; ``own_ms``: this node's previous heartbeat, if any."""
        late = own_ms is not None and now_ms - own_ms > self.recent_ms
        if self._reconnected or own_ms is None or late:
            if late and own_ms is not None and now_ms >= self.hold_until:
                logger.warning(
                    "this node's heartbeat was %.1f s late (Redis or this process stalled): "
                    "purging no node for %.1f s",
                    (now_ms - own_ms) / 1000,
                    self.hold_ms / 1000,
                )
            self._reconnected = False
            self.hold_until = max(self.hold_until, now_ms + self.hold_ms)
            return False
        return now_ms >= self.hold_until


class DeathRule:
    """The fast signal: a node whose own channel lost its subscriber is dead.

    A node is dead when, at :data:`ZERO_CHECKS` checks in a row, its channel has no
    subscriber, and its heartbeat is older than :data:`STALE_BEATS` intervals (both of its
    Redis connections are gone: a node whose subscriber merely reconnects still beats).

    A zero counts only when this observer saw that channel subscribed before, on the same
    Redis server (same ``run_id``): after a Redis restart or failover every count starts at
    0, and a node that has not subscribed again yet is not dead; and a node of an earlier
    release, which has no such channel, is judged by its heartbeat alone (a rolling upgrade
    runs both side by side).
    """

    __slots__ = ("run_id", "stale_ms", "timeout_ms", "_seen", "_zeros")

    def __init__(self, heartbeat: float, timeout: float) -> None:
        self.stale_ms = int(heartbeat * STALE_BEATS * 1000)
        self.timeout_ms = int(timeout * 1000)
        self.run_id: str | None = None
        self._seen: set[str] = set()  # nodes seen subscribed on this Redis server
        self._zeros: dict[str, int] = {}  # checks in a row with no subscriber

    def redis_is(self, run_id: str) -> None:
        """The Redis server this node talks to (read again after every reconnect)."""
        if run_id != self.run_id:
            if self.run_id is not None:
                logger.warning("Redis is a new server (run_id changed): its counts start at 0")
            self.run_id = run_id
            self._seen.clear()
        self._zeros.clear()

    def interrupt(self) -> None:
        """The checks stop being consecutive (a reconnect, a stall): start counting again."""
        self._zeros.clear()

    def judge(self, now_ms: int, nodes: Iterable[tuple[str, int, int]], me: str) -> list[str]:
        """The dead among ``nodes``, (id, last heartbeat in ms, subscribers), seen at ``now_ms``."""
        if self.run_id is None:
            return []
        dead: list[str] = []
        present: set[str] = set()
        seen, zeros = self._seen, self._zeros
        for node, beat, subscribers in nodes:
            if node == me:
                continue
            present.add(node)
            if subscribers > 0:
                seen.add(node)
                zeros.pop(node, None)
                continue
            if node not in seen:
                continue
            count = zeros[node] = zeros.get(node, 0) + 1
            age = now_ms - beat
            # Older than the timeout: the heartbeat's case (it purges and counts it).
            if count >= ZERO_CHECKS and self.stale_ms < age <= self.timeout_ms:
                dead.append(node)
        for node in seen - present:  # purged or left: forget them
            seen.discard(node)
            zeros.pop(node, None)
        return dead


Listener = Callable[[str], None]


class DeadNodes:
    """Nodes found dead lately (by this node or another), and who to tell about them.

    Waiters check here after registering (a verdict may come between their lookup of a
    node and their registration) and listen for later ones. A node id seen alive again
    (a node restarted under a fixed ``--node-id``, or one purged while it was stalled) is
    forgotten.
    """

    __slots__ = ("keep", "_dead", "_listeners")

    def __init__(self, keep: float = 60.0) -> None:
        self.keep = keep
        self._dead: dict[str, float] = {}  # node id -> time.monotonic() of the verdict
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call ``listener(node_id)`` for each node found dead from now on."""
        self._listeners.append(listener)

    def declare(self, node_id: str) -> bool:
        """Record a verdict and tell the listeners; False when it was known already."""
        now = time.monotonic()
        for node, at in list(self._dead.items()):
            if now - at > self.keep:
                del self._dead[node]
        if node_id in self._dead:
            return False
        self._dead[node_id] = now
        for listener in list(self._listeners):
            try:
                listener(node_id)
            except Exception:
                logger.exception("a dead-node listener failed")
        return True

    def revive(self, node_id: str) -> None:
        """The node is alive after all."""
        self._dead.pop(node_id, None)

    def __contains__(self, node_id: object) -> bool:
        at = self._dead.get(node_id) if isinstance(node_id, str) else None
        return at is not None and time.monotonic() - at <= self.keep
