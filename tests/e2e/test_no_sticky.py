"""No sticky sessions: three nodes behind nginx round-robin (no affinity), every transport and
protocol, with the official JS client; requests that land on a node that does not hold the
connection are forwarded to the one that does, and the test checks that they were.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LOOPBACK
from tests.e2e.balancer import Nginx

pytestmark = pytest.mark.e2e

HUBS = {"/hubs/e2e": "tests.e2e.hubs:E2EHub"}
ADMIN = "no-sticky-admin"
SECRET = "no-sticky-shared-secret"


def backplane_of(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/_hubplane/backplane",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


@pytest.fixture(scope="module")
def cluster(
    module_hubplane_server: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Nginx, list[Any]]]:
    prefix = f"nosticky-{uuid.uuid4().hex[:8]}:"
    args = [
        "--redis-url",
        redis_server.url,
        "--channel-prefix",
        prefix,
        "--token-secret",
        SECRET,
        "--admin-token",
        ADMIN,
        "--authenticator",
        "tests.e2e.hubs:authenticate",
        "--log-level",
        "warning",
    ]
    nodes = [module_hubplane_server(HUBS, extra_args=args) for _ in range(3)]
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), [n.port for n in nodes])
    try:
        yield nginx, nodes
    finally:
        nginx.stop()


SCENARIO = """
const a = await connect({ query: { user: "ann" } });
const b = await connect({ query: { user: "bob" } });
log("ids", [a.connectionId === b.connectionId, typeof a.connectionId]);
log("add", await a.invoke("Add", 2, 3));
log("echo", await b.invoke("Echo", { deep: [1, "x", null] }));
const got = deferred();
b.on("Receive", (kind, payload) => got.resolve([kind, payload]));
await b.invoke("Join", params.group);
await a.invoke("SendGroup", params.group, "hello");
log("group", await within(got.promise, 5000, "group push"));
const seq = [];
const all = deferred();
a.on("Seq", (i) => { seq.push(i); if (seq.length === 20) all.resolve(); });
await a.invoke("PushMany", 20);
await within(all.promise, 5000, "pushes");
log("seq", seq);
const items = await new Promise((resolve) => {
  const out = [];
  a.stream("Counter", 5, 0.01).subscribe({
    next: (v) => out.push(v), complete: () => resolve(out), error: (e) => resolve(errorText(e)),
  });
});
log("stream", items);
const many = await Promise.all([...Array(10).keys()].map((i) => b.invoke("Add", i, i)));
log("many", many);
await a.stop(); await b.stop();
log("done", true);
"""

PAIRS = [
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
]


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_every_transport_through_a_round_robin_balancer(
    cluster: tuple[Nginx, list[Any]], node_client: Any, transport: str, protocol: str
) -> None:
    nginx, nodes = cluster
    before = [backplane_of(n.port) for n in nodes]
    result = node_client.run(
        SCENARIO,
        url=f"http://{LOOPBACK}:{nginx.port}/hubs/e2e",
        transport=transport,
        protocol=protocol,
        params={"group": f"g-{uuid.uuid4().hex[:8]}"},
        timeout=40,
    )
    assert result.value("ids") == [False, "string"]
    assert result.value("add") == 5
    assert result.value("echo") == {"deep": [1, "x", None]}
    assert result.value("group") == ["group", "hello"]
    assert result.value("seq") == list(range(20))
    assert result.value("stream") == [0, 1, 2, 3, 4]
    assert result.value("many") == [2 * i for i in range(10)]
    assert result.value("done") is True
    after = [backplane_of(n.port) for n in nodes]
    forwarded = sum(a["forwarded"] - b["forwarded"] for a, b in zip(after, before, strict=True))
    served = sum(
        a["forwards_served"] - b["forwards_served"] for a, b in zip(after, before, strict=True)
    )
    print(f"{transport}/{protocol}: {forwarded} requests forwarded, {served} served by owners")
    if transport == "WebSockets":
        assert forwarded == 0  # one request per connection: nothing to forward
    else:
        # Round robin over three nodes: most POSTs and polls land away from the owner.
        assert forwarded > 0 and served == forwarded


def test_a_forged_or_foreign_token_is_refused(cluster: tuple[Nginx, list[Any]]) -> None:
    nginx, _nodes = cluster
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for token in ("h1.AAAA.BBBB", "not-a-token"):
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{nginx.port}/hubs/e2e?id={token}", method="GET"
        )
        started = time.monotonic()
        try:
            opener.open(request, timeout=5)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 404, token
        assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- conformance


@pytest.fixture(scope="module")
def balanced_batches(
    module_hubplane_server: Any,
    redis_server: Any,
    node_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[tuple[str, str], Any]]:
    """The conformance scenarios of every transport and protocol, through nginx round robin.

    One three-node cluster per transport and protocol (its own channel prefix), so the
    "all" and "others" proxies see only their own batch, as in test_transports.
    """
    from tests.e2e import test_js_client as conformance
    from tests.e2e.test_transports import CASES

    # The scenarios' barrier ("Sync" on every client) orders what a node delivered to its own
    # clients; messages relayed from other nodes over Redis are asynchronous, so here the
    # barrier first gives them a moment (loopback delivery takes about a millisecond).
    single_node_sync = 'const syncAll = (...cs) => Promise.all(cs.map((c) => c.invoke("Sync")));'
    assert single_node_sync in conformance.PRELUDE
    prelude = conformance.PRELUDE.replace(
        single_node_sync,
        "const syncAll = async (...cs) => { await sleep(300); "
        'return Promise.all(cs.map((c) => c.invoke("Sync"))); };',
    )
    scenarios = {name: prelude + conformance.SCENARIOS[name] for name in CASES}
    balancers: list[Nginx] = []
    handles = {}
    try:
        for transport, protocol in PAIRS:
            args = [
                *conformance.SERVER_ARGS,
                "--redis-url",
                redis_server.url,
                "--channel-prefix",
                f"conf-{uuid.uuid4().hex[:8]}:",
                "--token-secret",
                SECRET,
            ]
            nodes = [module_hubplane_server(conformance.HUBS, extra_args=args) for _ in range(3)]
            nginx = Nginx(tmp_path_factory.mktemp("nginx"), [n.port for n in nodes])
            balancers.append(nginx)
            handles[(transport, protocol)] = node_client.start(
                scenarios,
                url=f"http://{LOOPBACK}:{nginx.port}/hubs/e2e",
                transport=transport,
                protocol=protocol,
                timeout=100,
                scenario_timeout=20,
            )
        yield {combo: handle.wait(timeout=110) for combo, handle in handles.items()}
    finally:
        for nginx in balancers:
            nginx.stop()


@pytest.mark.parametrize("combo", PAIRS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_conformance_through_the_balancer(
    balanced_batches: dict[tuple[str, str], Any], combo: tuple[str, str], node_client: Any
) -> None:
    """The foundation's conformance cases, with their own assertions, on a no-sticky cluster."""
    from tests.e2e.test_transports import CASES, run_check

    for case in CASES:
        result = balanced_batches[combo][case].ok()
        run_check(case, result, combo[1], node_client)
