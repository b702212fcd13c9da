"""A node killed outright (SIGKILL) is found dead within about two seconds, long before its
heartbeat times out. (A Redis that stalls for longer than the presence timeout gets no live node
purged: tests/lifetime/test_dead_node.py pins the guard deterministically, and the churn test's
8 s Redis freeze checks it with real processes.)

Real ``hubplane serve`` processes on real Redis servers, raw WebSocket clients and plain HTTP
for long polling. The presence timeout of the first test is 30 s, so only the fast signal
(the dead node's Redis connections closing) can pass it.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.e2e.cluster_hubs import HUB_PATH, WIRE_NAME
from tests.e2e.raw import RS, RawClient

pytestmark = pytest.mark.e2e

HUBS = {HUB_PATH: "tests.e2e.cluster_hubs:ClusterHub"}
ADMIN = "dead-node-admin"
SECRET = "dead-node-shared-secret"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_nodes(factory: Any, redis_url: str, prefix: str, count: int, *flags: str) -> list[Any]:
    """``count`` nodes in parallel on ``redis_url`` under ``prefix``."""
    args = [
        "--redis-url",
        redis_url,
        "--channel-prefix",
        prefix,
        "--admin-token",
        ADMIN,
        "--authenticator",
        "tests.e2e.cluster_hubs:authenticate",
        "--log-level",
        "warning",
        *flags,
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(factory, HUBS, extra_args=args) for _ in range(count)]
        return [f.result(timeout=60) for f in futures]


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {ADMIN}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def backplane_of(node: Any) -> dict[str, Any]:
    status, body = http("GET", f"{node.url}/_hubplane/backplane")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def dead_node_metrics(node: Any) -> dict[str, float]:
    """``hubplane_backplane_dead_nodes_total`` by signal, from ``/metrics``."""
    status, body = http("GET", f"{node.url}/metrics")
    assert status == 200
    pattern = r'^hubplane_backplane_dead_nodes_total\{signal="(\w+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, body.decode(), re.M)}


class Conns:
    """Raw WebSocket clients, closed at the end."""

    def __init__(self) -> None:
        self.clients: list[RawClient] = []

    def open(self, node: Any) -> tuple[RawClient, str]:
        client = RawClient(node.ws_url(HUB_PATH))
        self.clients.append(client)
        assert client.handshake() == {}
        client.invoke("Whoami", invocation_id="who")
        return client, str(client.completion()["result"]["connectionId"])

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def conns() -> Iterator[Conns]:
    pool = Conns()
    try:
        yield pool
    finally:
        pool.close()


def presence_of(r: redis.Redis, prefix: str) -> set[str]:
    return {c.decode() for c in r.hkeys(f"{prefix}{WIRE_NAME}:hubplane:conns")}


def long_polling_on(node: Any) -> str:
    """A long-polling connection started on ``node`` (its owner); returns its token."""
    hub = node.hub_url(HUB_PATH)
    status, body = http("POST", f"{hub}/negotiate?negotiateVersion=1", b"")
    assert status == 200, body
    token = json.loads(body)["connectionToken"]
    assert http("GET", f"{hub}?id={token}")[0] == 200  # the first poll: adopted here
    handshake = (json.dumps({"protocol": "json", "version": 1}) + RS).encode()
    assert http("POST", f"{hub}?id={token}", handshake)[0] == 200
    status, body = http("GET", f"{hub}?id={token}")
    assert (status, body) == (200, b"{}" + RS.encode()), body
    return str(token)


def test_a_killed_node_fails_its_waiters_and_leaves_presence_fast(
    redis_server: Any, hubplane_server: Any, conns: Conns
) -> None:
    prefix = f"dead-{uuid.uuid4().hex[:8]}:"
    a, b, c = start_nodes(
        hubplane_server,
        redis_server.url,
        prefix,
        3,
        "--presence-heartbeat",
        "1",
        "--presence-timeout",
        "30",
        "--token-secret",
        SECRET,
    )
    started = time.monotonic()  # every node is registered and subscribed by now
    r = redis.Redis.from_url(redis_server.url)
    try:
        on_a, on_a_id = conns.open(a)
        on_c, on_c_id = conns.open(c)
        # What a client result gets when its client disconnects: the reference error.
        leaving, leaving_id = conns.open(b)
        on_a.invoke("AskClient", leaving_id, "Never", [], invocation_id="ref")
        assert leaving.next_message()["target"] == "Never"
        leaving.close()
        reference = on_a.completion()
        assert reference["invocationId"] == "ref" and "error" in reference, reference

        # Calls from a and c wait for a client of b; a forwarded poll waits on b.
        target, target_id = conns.open(b)
        on_a.invoke("AskClient", target_id, "Never", [], invocation_id="from-a")
        on_c.invoke("AskClient", target_id, "Never", [], invocation_id="from-c")
        assert [target.next_message()["target"] for _ in range(2)] == ["Never", "Never"]
        token = long_polling_on(b)
        forwarded = backplane_of(a)["forwarded"]
        poller = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        poll = poller.submit(http, "GET", f"{a.hub_url(HUB_PATH)}?id={token}", None, 20.0)
        deadline = time.monotonic() + 5
        while backplane_of(a)["forwarded"] == forwarded and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backplane_of(a)["forwarded"] == forwarded + 1, "the poll was not forwarded to b"
        assert {on_a_id, on_c_id, target_id} <= presence_of(r, prefix)
        # The survivors check the nodes' channels every 0.25 s: they need one look at b alive
        # (a node dying within a check of its start is left to the heartbeat).
        time.sleep(max(0.0, started + 0.6 - time.monotonic()))

        killed = time.monotonic()
        b.kill()
        failures = {}
        for asker in (on_a, on_c):
            completion = asker.completion(timeout=10)
            failures[completion["invocationId"]] = (completion, time.monotonic() - killed)
        status, body = poll.result(timeout=20)
        poll_time = time.monotonic() - killed
        poller.shutdown()
        while target_id in presence_of(r, prefix) and time.monotonic() - killed < 10:
            time.sleep(0.02)
        clean_time = time.monotonic() - killed
        after = presence_of(r, prefix)

        times = {k: round(t, 2) for k, (_, t) in failures.items()}
        print(
            f"client results failed after {times} s, forwarded poll answered {status} after "
            f"{poll_time:.2f} s, presence clean after {clean_time:.2f} s"
        )
        for key, (completion, elapsed) in failures.items():
            assert completion["error"] == reference["error"], completion
            assert elapsed < 2.0, f"the call {key} failed {elapsed:.2f} s after the kill"
        assert status == 503 and b"gone" in body, (status, body)
        assert poll_time < 2.0
        assert target_id not in after and clean_time < 5.0
        # The survivors' own clients are untouched.
        assert {on_a_id, on_c_id} <= after
        for client in (on_a, on_c):
            client.invoke("Echo", "still here", invocation_id="echo")
            assert client.completion()["result"] == "still here"
        # One survivor purged b, by its closed connection; the heartbeat had no part.
        counted = [dead_node_metrics(n) for n in (a, c)]
        assert sum(m["connection"] for m in counted) == 1, counted
        assert sum(m["heartbeat"] for m in counted) == 0, counted
    finally:
        r.close()
