"""The churn harness: nodes come and go under traffic, and every client counts what it missed.

What runs (everything on 127.0.0.1, every wait bounded):

- one private ``redis-server`` (faults here must not disturb other tests);
- ``nodes`` ``hubplane serve`` processes serving ``ChurnHub`` (tests/e2e/churn_hubs.py) with a
  shared ``--token-secret`` (no sticky sessions), ``--admin-token``, short drain, disconnect and
  presence timeouts, and whatever ``extra_args`` a run adds (e.g. ``--durable-resume``);
- nginx round robin in front (tests/e2e/balancer.py, ``max_fails=0``: a refused connection
  goes to the next node at once, and a restarted node gets requests again as soon as it
  listens); with ``affinity``, hashing on the connection id instead (no request of a
  connection lands on another node, so none is forwarded to its owner over Redis);
- a publisher: ``backplane.Emitter`` in a thread of this process, ``Tick(seq)`` to the group at
  ``rate`` per second (seq 1, 2, 3, ... each confirmed by Redis before the next; a send that
  raises is recorded as failed and never retried under its number);
- with ``node_publisher``, a second one: a client of node 0 (directly, not through nginx)
  invoking ``Publish(group, seq)`` at the same rate, so that ``NodeTick(seq)`` leaves through
  that node's outbox, which holds it through a Redis outage;
- official JS clients through nginx, in one Node process (tests/node/churn.mjs, driven by tests/e2e/churn_clients.py): stateful
  WebSocket clients and plain ones on every transport and protocol, all with automatic
  reconnect; each joins the group on every (re)connect, echoes one call at a time, and
  reports every tick.

Counting: tests/e2e/churn_counting.py.

``run_scenario`` puts it together for the tests (tests/e2e/test_churn.py) and the fault runs
of load-tests/faults.py: start everything, let traffic flow, call the fault action, settle,
stop the publisher, wait for the clients, and return an ``Outcome`` (``summary_table`` prints
it).

Fault actions: ``roll`` (SIGTERM each node in turn), ``kill_busiest`` (SIGKILL one node), and
Redis itself: ``freeze_redis`` (SIGSTOP, then SIGCONT) and ``kill_redis`` (SIGKILL, start again
empty: it runs with ``--save ""``). The Redis ones watch the nodes ZSET meanwhile
(``PresenceWatch``): a live node missing from it was purged by another.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import conftest
from tests.conftest import LOOPBACK, HubplaneServer, RedisServer
from tests.e2e.balancer import Nginx
from tests.e2e.churn_clients import ChurnClients
from tests.e2e.churn_counting import (
    ClientSpec,
    Outcome,
    analyse_client,
    annotate_moves,
    client_table,
    fleet,
    ranges,
    summarise_classes,
    summary_table,
)
from tests.e2e.churn_hubs import HUB_PATH
from tests.e2e.churn_publishers import NodeTickPublisher, TickPublisher
from tests.e2e.churn_redis import PresenceWatch, freeze_redis, kill_redis
from tests.redis_cluster import RedisCluster

__all__ = [
    "ChurnClients",
    "ChurnCluster",
    "ChurnOptions",
    "ClientSpec",
    "NodeTickPublisher",
    "Outcome",
    "PresenceWatch",
    "TickPublisher",
    "client_table",
    "fleet",
    "freeze_redis",
    "kill_busiest",
    "kill_redis",
    "roll",
    "run_scenario",
    "serve_supports",
    "summary_table",
]

HUBS = {HUB_PATH: "tests.e2e.churn_hubs:ChurnHub"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- cluster


@functools.cache
def serve_help() -> str:
    """``hubplane serve --help`` of the server under test (to see which flags exist)."""
    cmd = conftest._launcher() + ["serve", "--help"]
    return subprocess.run(
        cmd, cwd=conftest.REPO_ROOT, capture_output=True, text=True, timeout=60
    ).stdout


def serve_supports(flag: str) -> bool:
    """True when ``hubplane serve`` lists ``flag`` (e.g. ``--durable-resume``)."""
    return any(
        word.rstrip(",") == flag or word.startswith(flag + "=") for word in serve_help().split()
    )


@dataclass
class ChurnOptions:
    """How the cluster of a churn run is set up."""

    nodes: int = 3
    drain_timeout: float = 3.0
    disconnect_timeout: float = 5.0
    presence_heartbeat: float = 0.5
    presence_timeout: float = 2.0
    keepalive_interval: float = 1.0
    #: the no-sticky secret every node shares (None: no signed tokens)
    token_secret: str | None = field(default_factory=lambda: f"churn-{uuid.uuid4().hex}")
    admin_token: str = "churn-admin"
    log_level: str = "warning"
    extra_args: tuple[str, ...] = ()
    #: nginx sends every request of one connection to one node (hash on its id) instead of
    #: round robin: no request needs forwarding to the connection's owner over Redis
    affinity: bool = False
    #: a private Redis Cluster of three masters (the nodes' default: sharded pub/sub) instead of
    #: one Redis (the Redis faults need one Redis)
    redis_cluster: bool = False


class ChurnCluster:
    """A private Redis, ``nodes`` hubplane processes and nginx round robin in front."""

    def __init__(self, workdir: Path, options: ChurnOptions | None = None) -> None:
        self.workdir = workdir
        self.options = options or ChurnOptions()
        self.prefix = f"churn-{uuid.uuid4().hex[:8]}:"
        self.redis: Any = (
            RedisCluster(workdir / "redis-cluster", masters=3)
            if self.options.redis_cluster
            else RedisServer(workdir, port=conftest.get_free_port())
        )
        self.nodes: list[HubplaneServer] = []
        self.nginx: Nginx | None = None

    def node_args(self) -> list[str]:
        o = self.options
        args = [
            "--redis-url",
            self.redis.url,
            "--channel-prefix",
            self.prefix,
            "--admin-token",
            o.admin_token,
            "--drain-timeout",
            str(o.drain_timeout),
            "--disconnect-timeout",
            str(o.disconnect_timeout),
            "--presence-heartbeat",
            str(o.presence_heartbeat),
            "--presence-timeout",
            str(o.presence_timeout),
            "--log-level",
            o.log_level,
        ]
        if o.token_secret:
            args += ["--token-secret", o.token_secret]
        return args + list(o.extra_args)

    def _start_node(self) -> HubplaneServer:
        for attempt in range(3):
            node = HubplaneServer(
                HUBS,
                extra_args=self.node_args(),
                keepalive_interval=self.options.keepalive_interval,
                log_dir=self.workdir,
            )
            try:
                return node.start()
            except RuntimeError:
                # another process may have taken the free port meanwhile: try another one
                if "address already in use" not in node.logs().lower() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def start(self) -> ChurnCluster:
        if self.options.redis_cluster:
            (self.workdir / "redis-cluster").mkdir(exist_ok=True)
        self.redis.start()
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.options.nodes) as pool:
            futures = [pool.submit(self._start_node) for _ in range(self.options.nodes)]
            for f in futures:
                self.nodes.append(f.result(timeout=60))
        # failing tests get the nodes' log tails (tests/conftest.py)
        conftest._LIVE_SERVERS.extend(self.nodes)
        nginx_dir = self.workdir / "nginx"
        nginx_dir.mkdir(exist_ok=True)
        self.nginx = Nginx(
            nginx_dir,
            [n.port for n in self.nodes],
            server_params="max_fails=0",
            hash_on="$arg_id" if self.options.affinity else None,
        )
        return self

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - stop the others too
                node.kill()
            if node in conftest._LIVE_SERVERS:
                conftest._LIVE_SERVERS.remove(node)
        self.redis.stop()

    def __enter__(self) -> ChurnCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The hub's URL through nginx."""
        assert self.nginx is not None
        return f"http://{LOOPBACK}:{self.nginx.port}{HUB_PATH}"

    def pid(self, index: int) -> int | None:
        proc = self.nodes[index].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def index_of_pid(self, pid: int | None) -> int | None:
        for i in range(len(self.nodes)):
            if pid is not None and self.pid(i) == pid:
                return i
        return None

    def admin(self, index: int, path: str) -> Any:
        """``GET /_hubplane/<path>`` on one node."""
        request = urllib.request.Request(
            f"{self.nodes[index].url}/_hubplane/{path.lstrip('/')}",
            headers={"Authorization": f"Bearer {self.options.admin_token}"},
        )
        with _OPENER.open(request, timeout=5) as response:
            return json.loads(response.read())

    def node_id(self, index: int) -> str:
        """A node's id in presence (it changes with every start)."""
        return str(self.admin(index, "backplane")["node"])

    def backplane_stats(self) -> dict[str, Any]:
        """Each live node's ``/_hubplane/backplane`` (duplicates dropped, gaps, ...)."""
        stats: dict[str, Any] = {}
        for i in range(len(self.nodes)):
            try:
                stats[f"n{i}"] = self.admin(i, "backplane") if self.pid(i) else None
            except OSError as exc:
                stats[f"n{i}"] = {"error": repr(exc)}
        return stats

    def wait_backplane(self, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` until every node reports Redis connected and nothing
        queued for it (its outbox flushed); None when that does not happen within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [self.admin(i, "backplane") for i in range(len(self.nodes))]
                if all(s["connected"] and not s["queued"] for s in states):
                    return round(time.time() - since, 3)
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def purge_evidence(self) -> dict[str, Any]:
        """Per node: its purged_nodes and reregistrations counters (0 when no live node was
        taken for dead) and the "stopped heartbeating: purged" lines of its log."""
        stats = self.backplane_stats()
        evidence: dict[str, Any] = {}
        for i, node in enumerate(self.nodes):
            s = stats.get(f"n{i}") or {}
            lines = [line for line in node.logs().splitlines() if "purged it" in line]
            evidence[f"n{i}"] = {
                "node": s.get("node"),
                "purged_nodes": s.get("purged_nodes"),
                "reregistrations": s.get("reregistrations"),
                "lines": lines[-10:],
            }
        return evidence

    def listed_nodes(self) -> dict[str, list[str]]:
        """The live nodes each node lists (``/_hubplane/nodes``)."""
        listed: dict[str, list[str]] = {}
        for i in range(len(self.nodes)):
            try:
                listed[f"n{i}"] = sorted(n["id"] for n in self.admin(i, "nodes")["nodes"])
            except OSError as exc:
                listed[f"n{i}"] = [f"error: {exc!r}"]
        return listed

    # -- faults -------------------------------------------------------------------------
    def sigterm(self, index: int) -> dict[str, Any]:
        """SIGTERM one node and wait (bounded) for it to exit; SIGKILL if it does not."""
        node = self.nodes[index]
        assert node.proc is not None and node.proc.poll() is None
        pid = node.proc.pid
        started = time.time()
        node.proc.send_signal(signal.SIGTERM)
        forced = False
        try:
            node.proc.wait(timeout=self.options.drain_timeout + 5)
        except subprocess.TimeoutExpired:
            forced = True
            node.kill()
        return {
            "node": index,
            "pid": pid,
            "signal_at": started,
            "exit_seconds": round(time.time() - started, 3),
            "exit_code": node.proc.returncode,
            "forced_kill": forced,
        }

    def kill(self, index: int) -> dict[str, Any]:
        """SIGKILL one node."""
        node = self.nodes[index]
        assert node.proc is not None and node.proc.poll() is None
        pid = node.proc.pid
        at = time.time()
        node.kill()
        return {"node": index, "pid": pid, "signal_at": at}

    def restart(self, index: int) -> float:
        """Start a stopped node again on its port; returns the seconds until it was ready."""
        started = time.time()
        self.nodes[index].start()
        return round(time.time() - started, 3)

    @property
    def presence_bound(self) -> float:
        """How long a node that is gone may stay listed in presence, at most, here."""
        return self.options.presence_timeout * 3 + 3

    def wait_node_gone(
        self, observer: int, node_id: str, since: float, timeout: float
    ) -> float | None:
        """Seconds from ``since`` until ``observer`` no longer lists ``node_id`` as live
        (None when it still does after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                nodes = self.admin(observer, "nodes")["nodes"]
                if all(n["id"] != node_id for n in nodes):
                    return round(time.time() - since, 3)
            except OSError:
                pass
            time.sleep(0.05)
        return None


# --------------------------------------------------------------------------- scenarios

#: A fault action: gets the cluster and the clients, does its damage, returns its timings.
FaultAction = Callable[[ChurnCluster, ChurnClients], dict[str, Any]]


def roll(pause: float = 1.0, rounds: int = 1) -> FaultAction:
    """Each node in turn (``rounds`` times over): SIGTERM, wait for its exit, see how long
    the next node still lists it in presence, start it again, wait until ready, pause."""

    def action(cluster: ChurnCluster, clients: ChurnClients) -> dict[str, Any]:
        steps = []
        count = len(cluster.nodes)
        for _ in range(rounds):
            for i in range(count):
                node_id = cluster.node_id(i)
                step = cluster.sigterm(i)
                step["left_presence_seconds"] = cluster.wait_node_gone(
                    (i + 1) % count, node_id, step["signal_at"], cluster.presence_bound
                )
                step["ready_seconds"] = cluster.restart(i)
                step["new_pid"] = cluster.pid(i)
                steps.append(step)
                time.sleep(pause)
        return {"kind": "rolling SIGTERM", "steps": steps}

    return action


def kill_busiest(restart: bool = False) -> FaultAction:
    """SIGKILL the node serving the most stateful clients; measure how fast presence sees it.

    The fault's record names the killed node and its clients (``clients_of_killed``); with
    ``restart`` the node is started again once the survivors no longer list it.
    """

    def action(cluster: ChurnCluster, clients: ChurnClients) -> dict[str, Any]:
        records = clients.snapshot()
        count = [0] * len(cluster.nodes)
        for r in records.values():
            i = cluster.index_of_pid(r.pid)
            if i is not None:
                count[i] += 10 if r.spec.stateful else 1
        victim = max(range(len(count)), key=lambda i: count[i])
        victim_pid = cluster.pid(victim)
        node_id = cluster.node_id(victim)
        on_victim = sorted(n for n, r in records.items() if r.pid == victim_pid)
        fault = cluster.kill(victim)
        observer = (victim + 1) % len(cluster.nodes)
        fault["dead_node_detected_seconds"] = cluster.wait_node_gone(
            observer, node_id, fault["signal_at"], cluster.presence_bound
        )
        fault["clients_of_killed"] = on_victim
        fault["kind"] = "SIGKILL"
        if restart:
            fault["ready_seconds"] = cluster.restart(victim)
        return fault

    return action


def run_scenario(
    name: str,
    workdir: Path,
    action: FaultAction,
    *,
    specs: Sequence[ClientSpec] | None = None,
    options: ChurnOptions | None = None,
    rate: float = 20.0,
    warmup: float = 1.0,
    settle: float = 2.0,
    catch_up: float = 5.0,
    echo_interval: float = 0.1,
    echo_timeout: float = 10.0,
    driver_timeout: float = 110.0,
    node: str = "node",
    node_publisher: bool = False,
) -> Outcome:
    """Start everything, let traffic flow ``warmup`` s, run ``action``, let it flow ``settle`` s
    more, stop the publishers (the end barrier) and give the clients ``catch_up`` s to see the
    last tick; then count. ``node_publisher`` adds the second publisher (``NodeTick`` from
    node 0, see ``NodeTickPublisher``)."""
    specs = list(specs if specs is not None else fleet())
    started = time.monotonic()
    with ChurnCluster(workdir, options) as cluster:
        group = f"churn-{uuid.uuid4().hex[:8]}"
        publisher = TickPublisher(cluster.redis.url, cluster.prefix, group, rate)
        from_node = (
            NodeTickPublisher(cluster.nodes[0].ws_url(HUB_PATH), group, rate)
            if node_publisher
            else None
        )
        clients = ChurnClients(timeout=driver_timeout, node=node)
        last_node = 0
        try:
            clients.start(
                cluster.url,
                group,
                specs,
                echo_interval=echo_interval,
                echo_timeout=echo_timeout,
            )
            publisher.start()
            if from_node is not None:
                from_node.start()
            t0 = time.time()
            if not clients.wait_until(lambda: all(r.seqs for r in clients.records.values()), 10):
                silent = [n for n, r in clients.records.items() if not r.seqs]
                raise AssertionError(f"no tick reached {silent} within 10 s")
            time.sleep(warmup)
            fault = action(cluster, clients)
            time.sleep(settle)
            last = publisher.stop()
            last_node = from_node.stop() if from_node is not None else 0
            clients.wait_until(
                lambda: all(
                    r.last_seq >= last and r.last_node_seq >= last_node
                    for r in clients.records.values()
                ),
                catch_up,
            )
            nodes = cluster.backplane_stats()
            purges = cluster.purge_evidence()
            clients.finish()
            # before the clients are stopped: a "closed" event is then one of the run
            records = clients.snapshot()
        finally:
            publisher.stop()
            if from_node is not None:
                from_node.stop()
            clients.close()
        published = {seq: at for seq, at in publisher.published}
        failed = publisher.failed_seqs
        stream = from_node.stream() if from_node is not None else None
        annotate_moves(fault, records, time.time())
        per_client = {
            n: analyse_client(r, published, last, t0, publisher.period, failed, stream)
            for n, r in records.items()
        }
        publishers: dict[str, Any] = {
            "rate": rate,
            "published": len(published),
            "failed": len(failed),
            "failed_seqs": ranges(failed),
            "last_failed": max(failed, default=0),
            "last": last,
        }
        if publisher.failed:
            took = sorted(publisher.failed_seconds)
            publishers["failed_in_seconds"] = {
                "median": round(statistics.median(took), 3),
                "max": round(took[-1], 3),
            }
            publishers["failures"] = sorted({why for _, why in publisher.failed})[:3]
        if from_node is not None and stream is not None:
            publishers["node"] = {
                "accepted": len(stream.accepted),
                "failed": len(stream.failed),
                "failed_seqs": ranges(stream.failed),
                "last": stream.last,
                "late_completions": len(from_node.late),
                "ended_early": from_node.error,
            }
        return Outcome(
            scenario=name,
            clients=per_client,
            classes=summarise_classes(per_client),
            fault=fault,
            publisher=publishers,
            seconds=round(time.monotonic() - started, 1),
            nodes=nodes,
            records=records,
            purges=purges,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.e2e.churn [rolling|kill|redis-freeze|redis-kill]``: one quick run,
    printed (the Redis faults with the node publisher too)."""
    import tempfile

    which = (list(argv) if argv is not None else sys.argv[1:]) or ["rolling"]
    actions: dict[str, Callable[[], FaultAction]] = {
        "rolling": roll,
        "kill": kill_busiest,
        "redis-freeze": freeze_redis,
        "redis-kill": kill_redis,
    }
    with tempfile.TemporaryDirectory(prefix="churn-") as tmp:
        outcome = run_scenario(
            which[0],
            Path(tmp),
            actions[which[0]](),
            node_publisher=which[0].startswith("redis"),
        )
    print(summary_table(outcome))
    print(client_table(outcome))
    print(json.dumps(outcome.fault, indent=1))
    print(json.dumps(outcome.publisher, indent=1))
    print(json.dumps(outcome.purges, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
