"""Redis faults for the churn harness (tests/e2e/churn.py): Redis frozen, Redis killed.

``freeze_redis`` stops Redis with SIGSTOP (it keeps its sockets and data, the kernel even
accepts new connections, but nothing answers) and continues it; ``kill_redis`` kills it and
starts it again empty on the same port (it runs with ``--save ""``). Both record when each node
noticed (its ``/_hubplane/backplane`` says not connected), when all were connected again with
their outbox flushed, and watch the nodes ZSET straight from Redis (``PresenceWatch``) for a
live node that another one purged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from tests.conftest import LOOPBACK

if TYPE_CHECKING:
    from tests.e2e.churn import ChurnCluster, FaultAction
    from tests.e2e.churn_clients import ChurnClients

__all__ = ["PresenceWatch", "freeze_redis", "kill_redis"]


class PresenceWatch:
    """Samples the nodes ZSET (``<prefix>hubplane:nodes``) every ``interval`` seconds from a
    thread, straight from Redis: each node id it holds with its last heartbeat (None while
    Redis does not answer).

    Data kept (a frozen Redis), a live node missing from it was purged by another node; data
    lost (Redis restarted empty), every node is missing until it registers again, and missing
    after that means purged. A heartbeat older than the presence timeout is what a purge
    looks for: ``max_heartbeat_age`` shows how close each node came.
    """

    def __init__(self, cluster: ChurnCluster, interval: float = 0.1) -> None:
        self.key = (cluster.prefix + "hubplane:nodes").encode()
        self.interval = interval
        # (epoch s, node id -> seconds since its last heartbeat, or None: no answer)
        self.samples: list[tuple[float, dict[str, float] | None]] = []
        self._client = redis.Redis(
            host=LOOPBACK,
            port=cluster.redis.port,
            socket_timeout=0.3,
            socket_connect_timeout=0.3,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence-watch", daemon=True)

    def start(self) -> PresenceWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            ages: dict[str, float] | None
            try:
                raw: list[tuple[bytes, float]] = self._client.zrange(  # type: ignore[assignment]
                    self.key, 0, -1, withscores=True
                )
                ages = {m.decode(): round(at - score / 1000, 3) for m, score in raw}
            except (redis.RedisError, OSError):
                ages = None
                # a dead connection is not reused: the next sample connects anew
                self._client.connection_pool.disconnect()
            self.samples.append((at, ages))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def summary(self, node_ids: Sequence[str], since: float) -> dict[str, Any]:
        """From ``since`` (the thaw, or the restart) on: ``absent`` (per node id, how many
        answered samples lacked it, and the first and last, seconds after ``since``),
        ``all_back_seconds`` (when every node was first listed again), ``absent_after_back``
        (as ``absent``, after that moment) and ``max_heartbeat_age`` per node (seconds)."""
        after = [(t, ages) for t, ages in self.samples if t >= since and ages is not None]
        back = next((t for t, ages in after if set(node_ids) <= set(ages)), None)

        def absences(samples: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for node_id in node_ids:
                missing = [round(t - since, 2) for t, ages in samples if node_id not in ages]
                if missing:
                    out[node_id] = {
                        "samples": len(missing),
                        "from": min(missing),
                        "to": max(missing),
                    }
            return out

        oldest = {
            node_id: max((ages[node_id] for _, ages in after if node_id in ages), default=None)
            for node_id in node_ids
        }
        return {
            "samples": len(after),
            "unanswered": sum(1 for t, ages in self.samples if t >= since and ages is None),
            "absent": absences(after),
            "all_back_seconds": None if back is None else round(back - since, 3),
            "absent_after_back": absences([x for x in after if back is not None and x[0] > back]),
            "max_heartbeat_age": oldest,
        }


def _redis_fault(
    kind: str,
    harm: Callable[[ChurnCluster], None],
    mend: Callable[[ChurnCluster], None],
    down: float,
) -> FaultAction:
    """Harm Redis, keep it so ``down`` seconds (watching each node notice), mend it, wait for
    every node to flush its outbox, then watch presence ``presence_timeout + 1`` s more: a node
    that came back late would be purged by the first heartbeat of another within that."""

    def action(cluster: ChurnCluster, clients: ChurnClients) -> dict[str, Any]:
        count = len(cluster.nodes)
        node_ids = [cluster.node_id(i) for i in range(count)]
        listed_before = cluster.listed_nodes()
        watch = PresenceWatch(cluster).start()
        noticed: dict[str, float | None] = {f"n{i}": None for i in range(count)}
        at = time.time()
        try:
            try:
                harm(cluster)
                deadline = time.monotonic() + down
                while time.monotonic() < deadline:
                    for i in range(count):
                        if noticed[f"n{i}"] is None:
                            try:
                                if not cluster.admin(i, "backplane")["connected"]:
                                    noticed[f"n{i}"] = round(time.time() - at, 3)
                            except OSError:
                                pass
                    time.sleep(0.05)
            finally:
                mend(cluster)
            mended = time.time()
            recovered = cluster.wait_backplane(mended, 15.0)
            time.sleep(cluster.options.presence_timeout + 1)
        finally:
            watch.stop()
        return {
            "kind": kind,
            "fault_at": at,
            "down_seconds": round(mended - at, 3),
            "node_ids": node_ids,
            "listed_before": listed_before,
            "noticed_seconds": noticed,
            "recovered_seconds": recovered,
            "presence": watch.summary(node_ids, mended),
            "listed_after": cluster.listed_nodes(),
        }

    return action


def freeze_redis(seconds: float = 8.0) -> FaultAction:
    """SIGSTOP Redis for ``seconds`` (it keeps its sockets and data but answers nothing),
    then SIGCONT: nodes find it silent after their reply timeout, buffer, and reconnect."""
    return _redis_fault(
        "Redis SIGSTOP", lambda c: c.redis.freeze(), lambda c: c.redis.thaw(), seconds
    )


def kill_redis(down: float = 5.0) -> FaultAction:
    """SIGKILL Redis, start it again after ``down`` seconds on the same port, empty
    (``--save ""``: presence, groups and scripts are gone)."""
    return _redis_fault("Redis SIGKILL", lambda c: c.redis.kill(), lambda c: c.redis.start(), down)
