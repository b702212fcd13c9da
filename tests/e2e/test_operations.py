"""Operations: ``/metrics``, ``/healthz``, ``/readyz`` and the graceful drain on SIGTERM.

Real ``hubplane serve`` processes, a real ``redis-server`` (stopped and started again for the
readiness test), nginx round robin in front of two nodes, and the official JS client with
automatic reconnect.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT, RedisServer, get_free_port
from tests.e2e.balancer import Nginx
from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.test_cluster import HUBS, Puppets, eventually, node_args, unique

pytestmark = pytest.mark.e2e

HUB = "ClusterHub"  # the hub label of the metrics
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, timeout: float = 3.0) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)``; a refused connection is status 0."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return (
                response.status,
                response.read().decode(),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), {k.lower(): v for k, v in exc.headers.items()}
    except (urllib.error.URLError, OSError):
        return 0, "", {}


Samples = list[tuple[str, dict[str, str], float]]


def scrape(base: str) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus-client's own parser."""
    status, body, headers = http("GET", base + "/metrics")
    assert status == 200, (status, body)
    assert headers.get("content-type", "").startswith("text/plain"), headers
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        v
        for n, have, v in samples
        if n == name and all(have.get(k) == x for k, x in labels.items())
    )


def names(samples: Samples) -> set[str]:
    return {n for n, _, _ in samples}


# --------------------------------------------------------------------------- metrics


def test_metrics_are_present_and_move_under_traffic(
    redis_server: Any, hubplane_server: Any, node_client: Any
) -> None:
    node = hubplane_server(HUBS, extra_args=node_args(redis_server.url, unique("metrics") + ":"))
    before = scrape(node.url)
    for name in (
        "hubplane_ready",
        "hubplane_draining",
        "hubplane_build_info",
        "hubplane_backplane_connected",
        "hubplane_invocation_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ):
        assert name in names(before), name
    assert value(before, "hubplane_ready") == 1
    assert value(before, "hubplane_draining") == 0
    assert value(before, "hubplane_backplane_connected") == 1
    assert value(before, "hubplane_connects_total", hub=HUB) == 0

    pool = Puppets(node_client.node)
    try:
        url = node.hub_url(HUB_PATH)
        g = unique("metrics-group")
        a = pool.connect(url, name="a", groups=[g])
        b = pool.connect(url, name="b", protocol="messagepack")
        c = pool.connect(url, name="c", transport="LongPolling", groups=[g])
        for i in range(5):
            a.invoke("SendGroup", g, f"m{i}")
        assert pool.wait_until(lambda: len(c.messages()) == 5, 5.0), c.messages()
        missing = a.call("NoSuchMethod")
        assert not missing.ok and "Method does not exist" in str(missing.error)
        wrong = a.call("Echo")  # Echo takes one argument
        assert not wrong.ok
        failed = a.call("AskClient", "no-such-connection", "X", [])  # raises in the hub
        assert not failed.ok

        m = scrape(node.url)
        assert (
            value(m, "hubplane_connections", hub=HUB, transport="WebSockets", protocol="json") == 1
        )
        assert (
            value(
                m, "hubplane_connections", hub=HUB, transport="WebSockets", protocol="messagepack"
            )
            == 1
        )
        assert (
            value(m, "hubplane_connections", hub=HUB, transport="LongPolling", protocol="json") == 1
        )
        assert value(m, "hubplane_connects_total", hub=HUB) == 3
        assert value(m, "hubplane_disconnects_total", hub=HUB) == 0
        ok = value(m, "hubplane_invocations_total", hub=HUB, outcome="ok")
        assert ok == 3 + 5  # one Whoami per connect, five sends
        assert value(m, "hubplane_invocations_total", hub=HUB, outcome="unknown_method") == 1
        assert value(m, "hubplane_invocations_total", hub=HUB, outcome="bad_arguments") == 1
        assert value(m, "hubplane_invocations_total", hub=HUB, outcome="error") == 1
        # every method that ran was timed, and the buckets are cumulative
        assert value(m, "hubplane_invocation_duration_seconds_count", hub=HUB) == ok + 1
        assert value(m, "hubplane_invocation_duration_seconds_sum", hub=HUB) > 0
        assert value(m, "hubplane_invocation_duration_seconds_bucket", hub=HUB, le="+Inf") == ok + 1
        # handshakes are not hub messages; 3 Whoami + 5 sends + 3 failing calls at least
        assert value(m, "hubplane_messages_received_total", hub=HUB) >= 11
        # 11 completions and the 5 group messages that reached c and a
        assert value(m, "hubplane_messages_sent_total", hub=HUB) >= 11 + 10
        assert value(m, "hubplane_backplane_published_total") >= 5
        assert value(m, "hubplane_backplane_batch_size_count") >= 1
        assert value(m, "hubplane_backplane_publish_duration_seconds_count") >= 1
        assert value(m, "hubplane_outbound_queued_bytes", hub=HUB) >= 0
        assert value(m, "hubplane_slow_clients_total", hub=HUB) == 0
        # no connection or user ids as labels
        text = http("GET", node.url + "/metrics")[1]
        for puppet in (a, b, c):
            assert puppet.id not in text

        b.stop()
        after = eventually(
            lambda: scrape(node.url),
            lambda s: value(s, "hubplane_disconnects_total", hub=HUB, protocol="messagepack") == 1,
            5.0,
            "the disconnect counted",
        )
        assert value(after, "hubplane_connections", hub=HUB, protocol="messagepack") == 0
        assert value(after, "hubplane_connections", hub=HUB) == 2
        assert value(after, "hubplane_messages_sent_total", hub=HUB) >= value(
            m, "hubplane_messages_sent_total", hub=HUB
        )
    finally:
        pool.close()


def test_metrics_can_be_switched_off(hubplane_server: Any) -> None:
    node = hubplane_server(HUBS, extra_args=["--no-metrics"])
    assert http("GET", node.url + "/metrics")[0] == 404
    assert http("GET", node.url + "/healthz")[0] == 200


# --------------------------------------------------------------------------- health


def test_readiness_is_false_while_redis_is_stopped(hubplane_server: Any, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        node = hubplane_server(HUBS, extra_args=node_args(redis.url, unique("ready") + ":"))
        assert http("GET", node.url + "/readyz")[:2] == (200, "ready")
        assert http("GET", node.url + "/healthz")[:2] == (200, "ok")

        redis.stop()
        status, body, _ = eventually(
            lambda: http("GET", node.url + "/readyz"), lambda r: r[0] == 503, 10.0, "not ready"
        )
        assert "Redis unreachable" in body
        assert http("GET", node.url + "/healthz")[0] == 200  # alive all the same
        m = scrape(node.url)
        assert value(m, "hubplane_ready") == 0
        assert value(m, "hubplane_backplane_connected") == 0

        redis.start()
        eventually(
            lambda: http("GET", node.url + "/readyz")[:2],
            lambda r: r == (200, "ready"),
            15.0,
            "ready again",
        )
        m = scrape(node.url)
        assert value(m, "hubplane_ready") == 1
        assert value(m, "hubplane_backplane_connected") == 1
        assert value(m, "hubplane_backplane_reconnects_total") >= 1
    finally:
        redis.stop()


def test_the_healthcheck_command(hubplane_server: Any) -> None:
    node = hubplane_server(HUBS)
    command = [sys.executable, "-m", "server.cli", "healthcheck"]

    def run(*args: str, **env: str) -> int:
        full_env = {"PATH": "/usr/bin:/bin", **env}
        result = subprocess.run(
            [*command, *args], cwd=REPO_ROOT, env=full_env, capture_output=True, timeout=30
        )
        return result.returncode

    assert run("--port", str(node.port)) == 0
    assert run(HUBPLANE_PORT=str(node.port)) == 0
    assert run("--port", str(node.port), "--path", "/readyz") == 0
    assert run("--port", str(get_free_port()), "--timeout", "1") == 1


# --------------------------------------------------------------------------- drain


def test_sigterm_answers_running_invocations_then_closes_with_reconnect(
    redis_server: Any, hubplane_server: Any, node_client: Any
) -> None:
    args = node_args(redis_server.url, unique("drain1") + ":", ["--drain-timeout", "10"])
    node = hubplane_server(HUBS, extra_args=args)
    pool = Puppets(node_client.node)
    try:
        url = node.hub_url(HUB_PATH)
        client = pool.connect(url, name="slowpoke", reconnect=[5000])
        other = pool.connect(url, name="other", reconnect=[5000], transport="ServerSentEvents")
        slow = client.call_later("Slow", 1.5)
        client.wait_for("slow", 1.5)  # the invocation is running on the server
        assert node.proc is not None
        sent_at = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        # readiness turns false at once and new clients are refused: 503 while the listener
        # is still open, then the refused connection itself (it stops listening at once, so
        # that reconnecting clients reach other nodes)
        status, body, _ = eventually(
            lambda: http("GET", node.url + "/readyz", timeout=1.0),
            lambda r: r[0] in (0, 503),
            1.0,
            "readiness false after SIGTERM",
        )
        assert status == 0 or "draining" in body
        assert http("POST", node.url + HUB_PATH + "/negotiate?negotiateVersion=1")[0] in (0, 503)
        # the invocation the server had taken answers before the Close
        reply = slow.result(timeout=5)
        assert reply.ok, reply
        assert reply.value == node.proc.pid
        for puppet in (client, other):
            # a Close with allowReconnect: the client starts reconnecting instead of closing
            assert pool.wait_until(lambda p=puppet: bool(p.reconnects()), 5.0), (
                puppet.name,
                pool.lifecycle(puppet.name),
            )
            assert puppet.reconnects()[0]["event"] == "reconnecting"
            assert not puppet.closes()
        code = node.proc.wait(timeout=12)
        took = time.monotonic() - sent_at
        assert took < 10, f"the node took {took:.1f}s to drain"
        assert code in (0, -signal.SIGTERM), code
    finally:
        pool.close()


def test_the_drain_timeout_bounds_the_exit(
    redis_server: Any, hubplane_server: Any, node_client: Any
) -> None:
    args = node_args(redis_server.url, unique("drain2") + ":", ["--drain-timeout", "3"])
    node = hubplane_server(HUBS, extra_args=args)
    pool = Puppets(node_client.node)
    try:
        client = pool.connect(node.hub_url(HUB_PATH), name="stuck")
        stuck = client.call_later("Slow", 60)
        client.wait_for("slow", 60)  # the invocation is running on the server
        assert node.proc is not None
        sent_at = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(timeout=10)
        took = time.monotonic() - sent_at
        assert took <= 3.5, f"exited {took:.1f}s after SIGTERM with --drain-timeout 3"
        reply = stuck.result(timeout=10)
        assert not reply.ok  # the client learns that the connection went away
        assert client.closes() or client.reconnects()
    finally:
        pool.close()


# Reconnect quickly and many times: a first try may land on the node that is still draining.
RECONNECT_DELAYS = [0, 250, 500, 1000, 1000, 2000, 2000, 2000, 3000, 3000]
DRAIN_TIMEOUT = 10.0
CLIENTS = [
    ("ws-json", "WebSockets", "json"),
    ("ws-msgpack", "WebSockets", "messagepack"),
    ("sse", "ServerSentEvents", "json"),
    ("lp-json", "LongPolling", "json"),
    ("lp-msgpack", "LongPolling", "messagepack"),
]


def test_sigterm_moves_every_client_to_the_surviving_node(
    redis_server: Any,
    hubplane_server: Any,
    node_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
    record_property: Any,
) -> None:
    """Two nodes behind round robin; one drains while every client invokes steadily.

    Every client ends up on the surviving node, and no invocation is lost: a call either
    completes, or fails at the client without having run, so the client retrying failed
    calls after its reconnect gets every one through, each run exactly once.
    """
    extra = [
        "--token-secret",
        "drain-test-secret",  # any node may take any request: plain round robin works
        "--drain-timeout",
        str(DRAIN_TIMEOUT),
        "--presence-timeout",
        "60",  # only a clean leave can take the drained node out of presence in time
    ]
    args = node_args(redis_server.url, unique("drain3") + ":", extra)
    doomed, survivor = (
        hubplane_server(HUBS, extra_args=args),
        hubplane_server(HUBS, extra_args=args),
    )
    assert doomed.proc is not None and survivor.proc is not None
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), [doomed.port, survivor.port])
    pool = Puppets(node_client.node, timeout=180)
    try:
        observers = unique("observers")
        observer = pool.connect(survivor.hub_url(HUB_PATH), name="observer", groups=[observers])
        assert observer.pid == survivor.proc.pid
        balanced = f"http://127.0.0.1:{nginx.port}{HUB_PATH}"
        # Round robin spreads the requests of a connection over both nodes; the one that
        # takes its first transport request owns it. Each kind of client is wanted on both
        # nodes: a request in between shifts which node the next connection's requests hit.
        clients: list[Any] = []
        for name, transport, protocol in CLIENTS:
            homes: set[int] = set()
            for attempt in range(6):
                if len(homes) == 2:
                    break
                p = pool.connect(
                    balanced,
                    name=f"{name}-{attempt}",
                    transport=transport,
                    protocol=protocol,
                    reconnect=RECONNECT_DELAYS,
                )
                if p.pid in homes:
                    pool.request("stop", conn=p.name)
                    http("GET", f"http://127.0.0.1:{nginx.port}/healthz")
                    continue
                homes.add(p.pid)
                clients.append(p)
            assert len(homes) == 2, f"no {name} client reached both nodes: {homes}"
        on_doomed = [p for p in clients if p.pid == doomed.proc.pid]
        assert len(on_doomed) == len(CLIENTS), [(p.name, p.pid) for p in clients]

        def ran() -> dict[str, list[int]]:
            seen: dict[str, list[int]] = {}
            for client_name, seq, _pid in observer.messages("Events"):
                seen.setdefault(client_name, []).append(seq)
            return seen

        for p in clients:
            started = pool.request(
                "tickStart",
                conn=p.name,
                method="Record",
                args=[observers, p.name, "$seq"],
                intervalMs=40,
                retry=20,  # the application retries a failed call after the reconnect
            )
            assert started.ok, started
        assert pool.wait_until(lambda: all(len(ran().get(p.name, [])) >= 5 for p in clients), 10)

        sent_at = time.monotonic()
        doomed.proc.send_signal(signal.SIGTERM)
        code = doomed.proc.wait(timeout=DRAIN_TIMEOUT + 5)
        took = time.monotonic() - sent_at
        assert took < DRAIN_TIMEOUT, f"the node took {took:.1f}s to drain"
        assert code in (0, -signal.SIGTERM), code

        # the node left presence at once (its heartbeat would keep it for 60 s)
        nodes = observer.invoke("PresenceNodes")
        assert len(nodes) == 1, nodes

        # every client of the drained node reconnects, through the balancer, to the survivor
        def where(p: Any) -> Any:
            reply = p.call("Whoami", timeout=5)
            return reply.value["pid"] if reply.ok else reply.error

        for p in clients:
            eventually(lambda p=p: where(p), lambda pid: pid == survivor.proc.pid, 30.0, p.name)
        for p in on_doomed:
            assert [e["event"] for e in p.reconnects()][:1] == ["reconnecting"], p.reconnects()
            assert any(e["event"] == "reconnected" for e in p.reconnects()), p.reconnects()
        for p in clients:
            assert not p.closes(), (p.name, p.closes())

        # a few ticks on the survivor (where every client is now)
        ticked = {p.name: len(ran().get(p.name, [])) for p in clients}
        assert pool.wait_until(
            lambda: all(len(ran().get(p.name, [])) >= ticked[p.name] + 3 for p in clients), 10
        ), (ticked, {n: len(s) for n, s in ran().items()})
        results = {}
        for p in clients:
            stopped = pool.request("tickStop", conn=p.name, settleMs=5000, timeout=15)
            assert stopped.ok, stopped
            results[p.name] = stopped.value
        # the last Records reach the observer: one more from each client, on the same node
        # after all of its others, reaches the observer after them
        for p in clients:
            p.invoke("Record", observers, f"{p.name}/end", 0)
        assert pool.wait_until(lambda: all(f"{p.name}/end" in ran() for p in clients), 10), ran()
        seen = ran()
        record_property(
            "drain",
            {
                "seconds": round(took, 2),
                "on_drained_node": [p.name for p in on_doomed],
                "per_client": {
                    n: {"issued": r["issued"], "retried": len(r["retried"])}
                    for n, r in results.items()
                },
            },
        )
        for p in clients:
            r = results[p.name]
            assert r["pending"] == 0, (p.name, r)
            # no invocation is lost: every one completed in the end ...
            assert r["errors"] == [], (p.name, r["errors"][:5], r["retried"][:5], r["issued"])
            assert r["ok"] == list(range(1, r["issued"] + 1)), (p.name, r)
            # ... and ran exactly once: a call the client saw fail had not run, so its retry
            # did not repeat it
            executed = seen.get(p.name, [])
            assert sorted(executed) == r["ok"], (
                p.name,
                sorted(set(executed) ^ set(r["ok"])),
                sorted(s for s in executed if executed.count(s) > 1),
            )
            if p not in on_doomed:
                assert not r["retried"], (p.name, r["retried"][:5])
            assert r["issued"] >= 10, (p.name, r["issued"])
        # the clients of the drained node did see failed calls (the reconnect was real)
        assert any(results[p.name]["retried"] for p in on_doomed), results
    finally:
        pool.close()
        nginx.stop()


# --------------------------------------------------------------------------- docs and dashboard


def test_the_dashboard_and_the_docs_name_the_metrics_that_exist(
    redis_server: Any, hubplane_server: Any, node_client: Any
) -> None:
    """Every ``hubplane_*`` name in the Grafana dashboard and in docs/operations.md is served,
    and the docs' metrics table lists every family the server serves."""
    import json
    import re

    args = node_args(redis_server.url, unique("names") + ":", ["--token-secret", "names"])
    node = hubplane_server(HUBS, extra_args=args)
    pool = Puppets(node_client.node)
    try:
        pool.connect(node.hub_url(HUB_PATH), name="one")
        text = http("GET", node.url + "/metrics")[1]
    finally:
        pool.close()
    families = {f.name for f in text_string_to_metric_families(text)}
    served = {n for n, _, _ in scrape(node.url)} | families
    served_hubplane = {n for n in families if n.startswith("hubplane_")}

    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs: list[str] = []

    def walk(node_: Any) -> None:
        if isinstance(node_, dict):
            for key, item in node_.items():
                if key in ("expr", "query", "definition") and isinstance(item, str):
                    exprs.append(item)
                walk(item)
        elif isinstance(node_, list):
            for item in node_:
                walk(item)

    walk(dashboard)
    used = {m for e in exprs for m in re.findall(r"\bhubplane_[a-z_]+", e)}
    assert used, "the dashboard queries no hubplane metric"
    assert {family(u) for u in used} <= {family(s) for s in served}, sorted(
        {family(u) for u in used} - {family(s) for s in served}
    )
    assert {family(u) for u in used} == served_hubplane, sorted(
        served_hubplane ^ {family(u) for u in used}
    )

    doc = (REPO_ROOT / "docs" / "operations.md").read_text()
    table = set(re.findall(r"^\| `(hubplane_[a-z_]+)`", doc, flags=re.MULTILINE))
    assert {family(t) for t in table} == served_hubplane, sorted(
        served_hubplane ^ {family(t) for t in table}
    )
    mentioned = set(re.findall(r"\bhubplane_[a-z_]+", doc))
    assert {family(m) for m in mentioned} <= {family(s) for s in served}, sorted(
        {family(m) for m in mentioned} - {family(s) for s in served}
    )
