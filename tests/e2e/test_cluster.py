"""Several hubplane nodes on one Redis behave as one hub, seen through official JS clients.

The module's cluster is three ``hubplane serve`` processes on the session Redis, started once
(and again on the session's Redis Cluster: every test runs on both, see ``redis_server``);
some tests add an in-process node (``create_app`` on a real uvicorn in a background thread)
to reach clients through its ``HubContext``. The clients are official ``@microsoft/signalr``
clients in one Node process per test (``tests/node/cluster.mjs``), driven step by step from
Python, so a test can act between two steps (kill a node, call a HubContext, emit from Redis).

Checking that a message did *not* arrive: the sender publishes a barrier broadcast after the
message under test, from the same node; once a client has seen the barrier it has seen
everything published before it, so no sleep is needed. (This relies on a node publishing in
order over its one Redis writer and reading its one subscriber connection in order, as
DESIGN.md has it; were that broken, a negative check could pass wrongly but never fail wrongly,
since the expected receivers are awaited on their own.)

The harness classes here (``Puppets``, ``LoopThread``, ``InProcessNode``, ``start_nodes``,
``eventually``) are also used by ``test_cluster_faults.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from tests.conftest import LOOPBACK, NODE_DIR, get_free_port
from tests.e2e.cluster_hubs import HUB_PATH, WIRE_NAME, ClusterHub, authenticate
from tests.e2e.node_driver import NodeDriver

pytestmark = pytest.mark.e2e

T = TypeVar("T")

CLUSTER_DRIVER = NODE_DIR / "cluster.mjs"
HUBS = {HUB_PATH: "tests.e2e.cluster_hubs:ClusterHub"}
PRESENCE_HEARTBEAT = 0.5
PRESENCE_TIMEOUT = 2.0
#: How long a cross-node message may take before a test gives up on it.
DELIVERY_TIMEOUT = 5.0


def node_args(redis_url: str, channel_prefix: str = "", extra: Sequence[str] = ()) -> list[str]:
    """The ``hubplane serve`` flags of a test cluster node."""
    args = [
        "--redis-url",
        redis_url,
        "--presence-heartbeat",
        str(PRESENCE_HEARTBEAT),
        "--presence-timeout",
        str(PRESENCE_TIMEOUT),
        "--authenticator",
        "tests.e2e.cluster_hubs:authenticate",
        "--log-level",
        "warning",
    ]
    if channel_prefix:
        args += ["--channel-prefix", channel_prefix]
    return args + list(extra)


def start_nodes(
    factory: Any, redis_url: str, count: int, channel_prefix: str = "", extra: Sequence[str] = ()
) -> list[Any]:
    """Start ``count`` nodes in parallel (each start waits for its readiness)."""
    args = node_args(redis_url, channel_prefix, extra)
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(factory, HUBS, extra_args=args) for _ in range(count)]
        return [f.result(timeout=60) for f in futures]


def unique(prefix: str) -> str:
    """A name no other test uses (groups, users and payloads are cluster-wide)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ticking_group(pool: Puppets, urls: list[str]) -> tuple[str, Puppet, list[Puppet]]:
    """A new group, a ``sender`` on the first node and a receiver in the group on each node
    (JSON and MessagePack in turn): the set-up of the tests that count ticks under faults."""
    g = unique("ticks")
    sender = pool.connect(urls[0], name="sender")
    receivers = [
        pool.connect(url, name=f"r{i}", groups=[g], protocol=("json", "messagepack")[i % 2])
        for i, url in enumerate(urls)
    ]
    return g, sender, receivers


def last_tick(puppet: Puppet) -> int:
    """The highest tick number a puppet has received (0 before the first)."""
    return max((seq for seq, _ in puppet.ticks()), default=0)


def eventually(
    probe: Callable[[], T],
    check: Callable[[T], bool],
    timeout: float,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll ``probe()`` until ``check`` accepts its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last value: {value!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------- JS clients


class PuppetError(AssertionError):
    """A command of the JS driver failed (the client's error text is the message)."""


class Reply:
    """One command's outcome: ``ok`` and ``value``, or ``error``; ``ms`` as timed in Node."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.ok = "error" not in raw
        self.value = raw.get("ok")
        self.error: str | None = raw.get("error")
        self.ms: int = int(raw.get("ms") or 0)

    def __repr__(self) -> str:
        state = f"ok={self.value!r}" if self.ok else f"error={self.error!r}"
        return f"Reply({state}, ms={self.ms})"


def _decode_special(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if obj.get("$undefined") is True:
            return None
        if "$bytes" in obj:
            return bytes.fromhex(obj["$bytes"])
    return obj


class Puppets(NodeDriver):
    """A Node process holding official SignalR clients that the test drives one step at a time."""

    error = PuppetError
    label = "JS driver"

    def __init__(self, node: str = "node", timeout: float = 120.0) -> None:
        # per client: (method, args, time.monotonic() on arrival), in arrival order
        self._messages: dict[str, list[tuple[str, list[Any], float]]] = {}
        self._lifecycle: dict[str, list[dict[str, Any]]] = {}
        self.puppets: list[Puppet] = []
        super().__init__(CLUSTER_DRIVER, node, timeout)

    # -- plumbing -------------------------------------------------------------------
    def _decode(self, line: str) -> Any:
        return json.loads(line, object_hook=_decode_special)

    def _event(self, obj: dict[str, Any]) -> None:
        if obj.get("event") == "message":
            self._messages.setdefault(obj["conn"], []).append(
                (obj["method"], list(obj.get("args") or []), time.monotonic())
            )
        elif "conn" in obj:
            self._lifecycle.setdefault(obj["conn"], []).append(obj)

    def request(self, op: str, timeout: float = 10.0, **fields: Any) -> Reply:
        """Send one command and wait (bounded) for its reply."""
        return self.submit(op, **fields).result(timeout)

    def submit(self, op: str, **fields: Any) -> Pending:
        """Send one command without waiting: ``.result(timeout)`` on what it returns."""
        return Pending(self, self.send(op, **fields), f"{op} {fields}")

    def _reply(self, rid: int, what: str, timeout: float) -> Reply:
        return Reply(self.reply(rid, what, timeout))

    # -- clients --------------------------------------------------------------------
    def connect(
        self,
        url: str,
        *,
        user: str | None = None,
        groups: Iterable[str] = (),
        protocol: str = "json",
        name: str | None = None,
        query: dict[str, str] | None = None,
        answers: dict[str, Any] | None = None,
        timeout: float = 10.0,
        transport: str | None = None,
        reconnect: bool | list[int] | None = None,
        stateful: bool = False,
    ) -> Puppet:
        """Connect a client to the hub at ``url`` and wait until its ``on_connected`` ran.

        ``transport`` (default WebSockets) and ``reconnect`` (the client's automatic
        reconnect: True for its default delays, or a list of delays in ms) go to the client.
        """
        name = name or f"c{len(self.puppets) + 1}"
        params = dict(query or {})
        if user:
            params["user"] = user
        groups = list(groups)
        if groups:
            params["groups"] = ",".join(groups)
        extra: dict[str, Any] = {"answers": answers} if answers else {}
        if transport:
            extra["transport"] = transport
        if reconnect:
            extra["reconnect"] = reconnect
        if stateful:
            extra["stateful"] = True
        reply = self.request(
            "connect", timeout, conn=name, url=url, protocol=protocol, query=params, **extra
        )
        if not reply.ok:
            raise PuppetError(f"{name} could not connect to {url}: {reply.error}")
        puppet = Puppet(self, name, url, str(reply.value), protocol, user)
        self.puppets.append(puppet)
        # A client's invocations run after on_connected: once this returns, its groups exist.
        who = puppet.invoke("Whoami")
        assert who["connectionId"] == puppet.id, who
        assert who["user"] == user, who
        puppet.pid = who["pid"]
        return puppet

    def messages(self, name: str) -> list[tuple[str, list[Any], float]]:
        with self._cond:
            return list(self._messages.get(name, []))

    def lifecycle(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._lifecycle.get(name, []))


class Pending:
    """A command sent to the JS driver whose reply has not been awaited yet."""

    def __init__(self, pool: Puppets, rid: int, what: str) -> None:
        self._pool = pool
        self._rid = rid
        self._what = what
        self._reply: Reply | None = None

    def result(self, timeout: float = 10.0) -> Reply:
        """The reply (``Reply.ms`` is how long the command took in Node)."""
        if self._reply is None:
            self._reply = self._pool._reply(self._rid, self._what, timeout)
        return self._reply


class Puppet:
    """One official JS client of a ``Puppets`` pool."""

    def __init__(
        self,
        pool: Puppets,
        name: str,
        url: str,
        connection_id: str,
        protocol: str,
        user: str | None,
    ) -> None:
        self.pool = pool
        self.name = name
        self.url = url
        self.id = connection_id
        self.protocol = protocol
        self.user = user
        self.pid: int | None = None

    def __repr__(self) -> str:
        return f"<{self.name} {self.protocol} {self.id} on {self.url}>"

    def call(self, method: str, *args: Any, timeout: float = 10.0) -> Reply:
        """Invoke a hub method; the reply holds the result or the client's error text."""
        return self.pool.request("invoke", timeout, conn=self.name, method=method, args=list(args))

    def call_later(self, method: str, *args: Any) -> Pending:
        """Start an invocation; ``.result(timeout)`` waits for its reply."""
        return self.pool.submit("invoke", conn=self.name, method=method, args=list(args))

    def invoke(self, method: str, *args: Any, timeout: float = 10.0) -> Any:
        """Invoke a hub method and return its result; PuppetError when it fails."""
        reply = self.call(method, *args, timeout=timeout)
        if not reply.ok:
            raise PuppetError(f"{self.name}.{method}{args!r} failed: {reply.error}")
        return reply.value

    def stop(self) -> None:
        reply = self.pool.request("stop", conn=self.name)
        assert reply.ok, reply

    def state(self) -> str:
        return str(self.pool.request("state", conn=self.name).value)

    # -- what it received -----------------------------------------------------------
    def messages(self, method: str = "Receive") -> list[list[Any]]:
        return [args for m, args, _ in self.pool.messages(self.name) if m == method]

    def ticks(self) -> list[tuple[int, float]]:
        """The ``Tick(seq)`` pushes received: ``(seq, arrival time)`` in arrival order."""
        return [(args[0], t) for m, args, t in self.pool.messages(self.name) if m == "Tick"]

    def count(self, kind: str, payload: Any) -> int:
        """How many ``Receive(kind, payload)`` pushes arrived."""
        return sum(1 for args in self.messages() if args == [kind, payload])

    def wait_for(self, kind: str, payload: Any, timeout: float = DELIVERY_TIMEOUT) -> None:
        """Wait for ``Receive(kind, payload)``; fail with what did arrive after ``timeout``."""
        if not self.pool.wait_until(lambda: self.count(kind, payload) > 0, timeout):
            raise AssertionError(
                f"{self!r} did not receive {kind}/{payload!r} within {timeout}s; "
                f"it got {self.messages()!r}"
            )

    def closes(self) -> list[dict[str, Any]]:
        return [e for e in self.pool.lifecycle(self.name) if e["event"] == "close"]

    def reconnects(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.pool.lifecycle(self.name)
            if e["event"] in ("reconnecting", "reconnected")
        ]

    def wait_closed(self, timeout: float = 5.0) -> dict[str, Any]:
        if not self.pool.wait_until(lambda: bool(self.closes()), timeout):
            raise AssertionError(f"{self!r} was not closed within {timeout}s")
        return self.closes()[0]


def expect_delivery(
    kind: str,
    payload: Any,
    expected: Iterable[Puppet],
    everyone: Iterable[Puppet],
    barrier: Callable[[str], Any],
    timeout: float = DELIVERY_TIMEOUT,
) -> None:
    """``expected`` get ``Receive(kind, payload)`` exactly once, the others of ``everyone``
    never: checked once every client has seen a barrier published after the message."""
    expected = list(expected)
    everyone = list(everyone)
    for p in expected:
        p.wait_for(kind, payload, timeout)
    token = unique("barrier")
    barrier(token)
    for p in everyone:
        p.wait_for("barrier", token, timeout)
    got = {p.name: p.count(kind, payload) for p in everyone}
    want = {p.name: (1 if p in expected else 0) for p in everyone}
    assert got == want, f"{kind}/{payload}: deliveries per client {got}, expected {want}"


# --------------------------------------------------------------------------- in-process


class LoopThread:
    """An asyncio loop in a background thread; ``run(coro)`` waits (bounded) for a result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=5) if tasks else None

        if self._thread.is_alive():
            try:
                self.run(cancel_rest(), timeout=6)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class InProcessNode:
    """A node of the cluster running inside the test process: ``create_app`` on uvicorn."""

    def __init__(self, redis_url: str, channel_prefix: str = "") -> None:
        import uvicorn

        from server.app import create_app
        from server.runner import HubplaneServer
        from server.settings import Settings

        self.port = get_free_port()
        settings = Settings(
            host=LOOPBACK,
            port=self.port,
            redis_url=redis_url,
            channel_prefix=channel_prefix,
            presence_heartbeat=PRESENCE_HEARTBEAT,
            presence_timeout=PRESENCE_TIMEOUT,
            keepalive_interval=1.0,
            log_level="warning",
        ).validate()
        self.app = create_app({HUB_PATH: ClusterHub}, settings=settings, authenticate=authenticate)
        config = uvicorn.Config(
            self.app,
            host=LOOPBACK,
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            ws_ping_interval=None,
            ws_ping_timeout=None,
        )
        self.server = HubplaneServer(config)
        self.loop = LoopThread(f"hubplane-node-{self.port}")
        self._serving = self.loop.submit(self.server.serve())
        deadline = time.monotonic() + 20
        while not self.server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
                raise RuntimeError("the in-process node stopped before it started")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the in-process node did not start within 20 s")
            time.sleep(0.02)

    @property
    def hub_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{HUB_PATH}"

    @property
    def context(self) -> Any:
        """``app.state.hubplane.hub_context(ClusterHub)``."""
        return self.app.state.hubplane.hub_context(ClusterHub)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the node's event loop (where its Redis connections live)."""
        return self.loop.run(coro, timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        try:
            self._serving.result(timeout=15)
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
        self.loop.stop()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def redis_server(request: pytest.FixtureRequest, redis_server: Any) -> Any:
    """What the module's nodes share: the session's Redis, then the session's Redis Cluster
    (three masters, sharded pub/sub: ``redis+cluster://``). Every test runs on both."""
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster")
    return redis_server


@pytest.fixture(scope="module")
def cluster(redis_server: Any, module_hubplane_server: Any) -> Iterator[list[Any]]:
    """Three ``hubplane serve`` nodes on the session Redis (default channel prefix)."""
    nodes = start_nodes(module_hubplane_server, redis_server.url, 3)
    yield nodes
    for node in nodes:  # before the nodes of the next Redis start
        node.stop()


@pytest.fixture(scope="module")
def inproc(redis_server: Any, cluster: list[Any]) -> Iterator[InProcessNode]:
    """A fourth node of the cluster, in this process: its HubContext is at hand."""
    node = InProcessNode(redis_server.url)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def puppets(node_client: Any) -> Iterator[Puppets]:
    """A fresh Node process of official clients for one test."""
    pool = Puppets(node_client.node)
    try:
        yield pool
    finally:
        pool.close()


class Mesh:
    """Six clients over three nodes, JSON and MessagePack on each node.

    ======  ====  ============  ======  ===========
    client  node  protocol      user    in group g
    ======  ====  ============  ======  ===========
    a1      0     json          ann     yes
    a2      0     messagepack   bob     no
    b1      1     messagepack   ann     yes
    b2      1     json          (none)  yes
    c1      2     json          cat     yes
    c2      2     messagepack   bob     no
    ======  ====  ============  ======  ===========
    """

    def __init__(self, pool: Puppets, nodes: Sequence[Any]) -> None:
        self.g = unique("g")
        self.ann, self.bob, self.cat = unique("ann"), unique("bob"), unique("cat")
        url = [n.hub_url(HUB_PATH) for n in nodes]
        connect = pool.connect
        self.a1 = connect(url[0], name="a1", user=self.ann, groups=[self.g])
        self.a2 = connect(url[0], name="a2", user=self.bob, protocol="messagepack")
        self.b1 = connect(url[1], name="b1", user=self.ann, groups=[self.g], protocol="messagepack")
        self.b2 = connect(url[1], name="b2", groups=[self.g])
        self.c1 = connect(url[2], name="c1", user=self.cat, groups=[self.g])
        self.c2 = connect(url[2], name="c2", user=self.bob, protocol="messagepack")
        self.all = [self.a1, self.a2, self.b1, self.b2, self.c1, self.c2]
        # the three nodes are three different processes
        assert len({self.a1.pid, self.b1.pid, self.c1.pid}) == 3

    def __getitem__(self, name: str) -> Puppet:
        return {p.name: p for p in self.all}[name]


@pytest.fixture
def mesh(cluster: list[Any], puppets: Puppets) -> Mesh:
    return Mesh(puppets, cluster)


# --------------------------------------------------------------------------- sends


# name: (sender, hub method, arguments before the payload, who must receive it)
SEND_CASES: dict[str, tuple[str, str, Callable[[Mesh], list[Any]], str]] = {
    "all": ("a1", "SendAll", lambda m: [], "a1 a2 b1 b2 c1 c2"),
    "others": ("b2", "SendOthers", lambda m: [], "a1 a2 b1 c1 c2"),
    "all_except": (
        "a1",
        "SendAllExcept",
        lambda m: [[m.a2.id, m.c1.id]],  # one beside the sender, one far away
        "a1 b1 b2 c2",
    ),
    "group": ("a2", "SendGroup", lambda m: [m.g], "a1 b1 b2 c1"),
    "group_except": ("c2", "SendGroupExcept", lambda m: [m.g, [m.b1.id, m.c1.id]], "a1 b2"),
    "others_in_group": ("b1", "SendOthersInGroup", lambda m: [m.g], "a1 b2 c1"),
    "user": ("c2", "SendUser", lambda m: [m.ann], "a1 b1"),
    "users": ("b2", "SendUsers", lambda m: [[m.ann, m.cat]], "a1 b1 c1"),
    "client": ("a1", "SendClient", lambda m: [m.c2.id], "c2"),
    "clients": ("b2", "SendClients", lambda m: [[m.a2.id, m.c1.id, m.b1.id]], "a2 b1 c1"),
}


@pytest.mark.parametrize("case", list(SEND_CASES))
def test_proxy_reaches_exactly_its_clients_on_every_node(mesh: Mesh, case: str) -> None:
    sender_name, method, args, receivers = SEND_CASES[case]
    sender = mesh[sender_name]
    payload = unique(case)
    sender.invoke(method, *args(mesh), payload)
    expect_delivery(
        case,
        payload,
        [mesh[n] for n in receivers.split()],
        mesh.all,
        lambda token: sender.invoke("Barrier", token),
    )


@pytest.mark.parametrize("redis_server", ["redis-cluster"], indirect=True)
def test_channels_spread_over_the_masters_of_a_redis_cluster(redis_server: Any, mesh: Mesh) -> None:
    """On a Redis Cluster the nodes' channels are sharded: each master holds (``PUBSUB
    SHARDCHANNELS``) the channels of its own slots, several masters hold some, and classic
    pub/sub carries none."""
    per_master: dict[int, list[bytes]] = {}
    classic: list[bytes] = []
    for port in redis_server.master_ports():
        client = redis_server.client(port)
        try:
            per_master[port] = client.execute_command("PUBSUB", "SHARDCHANNELS", WIRE_NAME + ":*")
            classic += client.execute_command("PUBSUB", "CHANNELS", WIRE_NAME + ":*")
        finally:
            client.close()
    assert sum(1 for channels in per_master.values() if channels) > 1, per_master
    everywhere = [c for channels in per_master.values() for c in channels]
    assert len(everywhere) == len(set(everywhere))  # each channel on one master only
    for puppet in mesh.all:
        assert f"{WIRE_NAME}:connection:{puppet.id}".encode() in everywhere
    assert f"{WIRE_NAME}:group:{mesh.g}".encode() in everywhere
    assert classic == []


def test_groups_proxy_spans_nodes(mesh: Mesh) -> None:
    h = unique("h")
    mesh.c2.invoke("Join", h)  # c2 is in h only; g has a1 b1 b2 c1
    payload = unique("groups")
    mesh.a2.invoke("SendGroups", [mesh.g, h], payload)
    expect_delivery(
        "groups",
        payload,
        [mesh.a1, mesh.b1, mesh.b2, mesh.c1, mesh.c2],
        mesh.all,
        lambda token: mesh.a2.invoke("Barrier", token),
    )


def test_json_and_messagepack_clients_receive_the_same_values(mesh: Mesh) -> None:
    value = {
        "text": "héllo ✓ \u001e",
        "int": -17,
        "big": 2**40,
        "float": 1.5,
        "flag": True,
        "none": None,
        "list": [1, "two", [3], {"four": 4}],
        "map": {"deep": {"deeper": ["x"]}},
        "empty": {},
        "tag": unique("mixed"),
    }
    # from a MessagePack client on node 0 to everyone, and from a JSON client on node 2 to
    # a group and a user with members on other nodes and in both protocols
    mesh.a2.invoke("SendAll", value)
    for p in mesh.all:
        p.wait_for("all", value)
    mesh.c1.invoke("SendGroup", mesh.g, value)
    for p in (mesh.a1, mesh.b1, mesh.b2, mesh.c1):
        p.wait_for("group", value)
    mesh.c1.invoke("SendUser", mesh.bob, value)
    for p in (mesh.a2, mesh.c2):
        p.wait_for("user", value)
    assert {p.protocol for p in mesh.all} == {"json", "messagepack"}
    assert mesh.b1.invoke("Echo", value) == value  # and back through MessagePack


# --------------------------------------------------------------------------- groups


def test_group_add_and_remove_from_a_node_that_does_not_own_the_connection(
    cluster: list[Any], puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    g = unique("g")
    a = puppets.connect(url[0], name="a", groups=[g])  # a positive control in g
    b = puppets.connect(url[1], name="b")
    c = puppets.connect(url[2], name="c", protocol="messagepack")

    added = a.call("AddToGroup", c.id, g)  # node 0 adds a connection of node 2
    assert added.ok, added
    assert added.ms < 1500, f"a remote group add took {added.ms} ms"
    assert b.invoke("PresenceGroupsOf", c.id) == [g]
    first = unique("after-add")
    b.invoke("SendGroup", g, first)  # from node 1, a third node
    expect_delivery("group", first, [a, c], [a, b, c], lambda t: b.invoke("Barrier", t))

    removed = a.call("RemoveFromGroup", c.id, g)
    assert removed.ok, removed
    assert removed.ms < 1500, f"a remote group remove took {removed.ms} ms"
    assert b.invoke("PresenceGroupsOf", c.id) == []
    second = unique("after-remove")
    b.invoke("SendGroup", g, second)
    expect_delivery("group", second, [a], [a, b, c], lambda t: b.invoke("Barrier", t))


def test_group_add_for_an_unknown_connection_fails_fast(
    cluster: list[Any], puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    a = puppets.connect(url[0], name="a")
    gone = puppets.connect(url[2], name="gone")
    gone_id = gone.id
    gone.stop()
    eventually(
        lambda: a.invoke("PresenceConnections"),
        lambda ids: gone_id not in ids,
        DELIVERY_TIMEOUT,
        "the stopped connection leaving presence",
    )
    # the error reaches the client as a failed invocation, quickly
    reply = a.call("AddToGroup", "no-such-connection", unique("g"))
    assert not reply.ok, f"adding an unknown connection to a group succeeded: {reply}"
    assert reply.error, reply
    assert reply.ms <= 2000, f"the failure took {reply.ms} ms to reach the client"
    # and groups.add itself raises within 1.5 s, for a made-up id as for one that left
    for target in ("no-such-connection", gone_id):
        outcome = a.invoke("TryAddToGroup", target, unique("g"))
        assert outcome["error"], outcome
        assert outcome["seconds"] <= 1.5, f"groups.add({target!r}) failed only after {outcome}"
    # a live remote connection is still added promptly
    ok = a.invoke("TryAddToGroup", puppets.connect(url[1], name="live").id, unique("g"))
    assert ok["error"] is None and ok["seconds"] < 1.0, ok


# --------------------------------------------------------------------------- HubContext


def test_hub_context_of_an_in_process_node_reaches_other_nodes(
    cluster: list[Any], inproc: InProcessNode, puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    g, user = unique("g"), unique("dora")
    c = puppets.connect(url[2], name="c", user=user, groups=[g])  # node 3
    b = puppets.connect(url[1], name="b", protocol="messagepack")
    local = puppets.connect(inproc.hub_url, name="local", user=user)  # on the in-process node
    assert local.pid == os.getpid() and c.pid != os.getpid()
    everyone = [c, b, local]
    ctx = inproc.context

    def barrier(token: str) -> None:
        inproc.run(ctx.clients.all.send("Receive", "barrier", token))

    one = unique("ctx-client")
    inproc.run(ctx.clients.client(c.id).send("Receive", "client", one))
    expect_delivery("client", one, [c], everyone, barrier)

    grouped = unique("ctx-group")
    inproc.run(ctx.clients.group(g).send("Receive", "group", grouped))
    expect_delivery("group", grouped, [c], everyone, barrier)

    users = unique("ctx-user")
    inproc.run(ctx.clients.user(user).send("Receive", "user", users))
    expect_delivery("user", users, [c, local], everyone, barrier)

    most = unique("ctx-all-except")
    inproc.run(ctx.clients.all_except([c.id]).send("Receive", "all_except", most))
    expect_delivery("all_except", most, [b, local], everyone, barrier)

    # a group change for a connection of node 3, made by the in-process node
    h = unique("h")
    inproc.run(ctx.groups.add(b.id, h))
    joined = unique("ctx-joined")
    c.invoke("SendGroup", h, joined)  # sent from node 3
    expect_delivery("group", joined, [b], everyone, lambda t: c.invoke("Barrier", t))

    # a connection a client on another node joins is visible from here, and the other way
    local.invoke("Join", g)
    p = ctx.presence
    assert set(inproc.run(p.group_members(g))) == {c.id, local.id}
    ids = set(inproc.run(p.connections()))
    assert {c.id, b.id, local.id} <= ids
    assert inproc.run(p.count_connections()) >= 3
    assert set(inproc.run(p.user_connections(user))) == {c.id, local.id}
    assert inproc.run(p.is_user_online(user)) is True
    assert inproc.run(p.is_user_online(unique("nobody"))) is False
    assert sorted(inproc.run(p.groups_of(c.id))) == [g]
    assert sorted(inproc.run(p.groups_of(b.id))) == [h]
    assert set(c.invoke("PresenceGroupMembers", g)) == {c.id, local.id}
    nodes = inproc.run(p.nodes())
    assert len(nodes) >= 4, nodes  # three processes and this one
    assert len({n["id"] for n in nodes}) == len(nodes)
    now = time.time()
    for n in nodes:
        assert {"id", "connections", "started", "last_heartbeat"} <= set(n), n
        assert isinstance(n["connections"], int) and n["connections"] >= 0, n
        assert n["started"] <= n["last_heartbeat"] + 0.5, n
        assert now - n["last_heartbeat"] <= PRESENCE_TIMEOUT + 1, n


def test_client_results_from_a_client_on_another_node(
    cluster: list[Any], inproc: InProcessNode, puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    answers = {"GetAnswer": 42, "GetText": "forty-two", "Refuse": {"$error": "not telling"}}
    json_far = puppets.connect(url[2], name="rj", answers=answers)
    pack_far = puppets.connect(url[1], name="rm", protocol="messagepack", answers=answers)
    asker = puppets.connect(url[0], name="asker")
    assert asker.invoke("AskClient", json_far.id, "GetAnswer", [1]) == 42
    assert asker.invoke("AskClient", pack_far.id, "GetText", []) == "forty-two"
    refused = asker.call("AskClient", pack_far.id, "Refuse", [])
    assert not refused.ok and "not telling" in str(refused.error)
    # The same from a HubContext on the in-process node.
    ask = inproc.context.clients.client(json_far.id).invoke("GetAnswer", timeout=5)
    assert inproc.run(ask) == 42
    # A connection nobody owns fails at once with a clear message.
    started = time.monotonic()
    missing = asker.call("AskClient", "no-such-connection", "GetAnswer", [])
    assert not missing.ok and "does not exist" in str(missing.error)
    assert time.monotonic() - started < 2


def test_abort_from_another_node(
    cluster: list[Any], inproc: InProcessNode, puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    victim = puppets.connect(url[2], name="victim")
    neighbour = puppets.connect(url[2], name="neighbour")
    far = puppets.connect(url[0], name="far", protocol="messagepack")
    started = time.monotonic()
    inproc.run(inproc.context.abort(victim.id))
    victim.wait_closed(timeout=3)
    assert time.monotonic() - started < 3
    assert neighbour.state() == "Connected" and far.state() == "Connected"
    assert not neighbour.closes() and not far.closes()
    eventually(
        lambda: far.invoke("PresenceConnections"),
        lambda ids: victim.id not in ids and neighbour.id in ids,
        DELIVERY_TIMEOUT,
        "the aborted connection leaving presence",
    )


def test_abort_user_everywhere(cluster: list[Any], inproc: InProcessNode, puppets: Puppets) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    user, other = unique("eve"), unique("fay")
    targets = [
        puppets.connect(url[0], name="e0", user=user),
        puppets.connect(url[2], name="e2", user=user, protocol="messagepack"),
        puppets.connect(inproc.hub_url, name="e_local", user=user),
    ]
    spared = [
        puppets.connect(url[2], name="f2", user=other),
        puppets.connect(url[1], name="anon"),
    ]
    inproc.run(inproc.context.abort_user(user))
    for t in targets:
        t.wait_closed(timeout=3)
    for s in spared:
        assert s.state() == "Connected" and not s.closes(), s
    assert spared[1].invoke("PresenceIsUserOnline", other) is True
    eventually(
        lambda: spared[1].invoke("PresenceIsUserOnline", user),
        lambda online: online is False,
        DELIVERY_TIMEOUT,
        "the aborted user going offline",
    )


# --------------------------------------------------------------------------- emitter


class EmitterHandle:
    """An ``Emitter`` (on a background loop) or a ``SyncEmitter``, called the same way."""

    def __init__(self, kind: str, redis_url: str, channel_prefix: str = "") -> None:
        from backplane import Emitter, SyncEmitter

        self.kind = kind
        self.loop: LoopThread | None = None
        options: dict[str, Any] = {
            "hub": WIRE_NAME,
            "channel_prefix": channel_prefix,
            "protocols": ("json", "messagepack"),
        }
        if kind == "async":
            self.loop = LoopThread("emitter")

            async def make() -> Any:
                return Emitter(redis_url, **options)

            self.emitter = self.loop.run(make())
        else:
            self.emitter = SyncEmitter(redis_url, **options)

    def __call__(self, action: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """``action(emitter)``; awaited on the emitter's loop when it returns an awaitable."""
        if self.loop is None:
            result = action(self.emitter)
            assert not inspect.isawaitable(result), "SyncEmitter returned an awaitable"
            return result

        async def run() -> Any:
            result = action(self.emitter)
            return await result if inspect.isawaitable(result) else result

        return self.loop.run(run(), timeout)

    def close(self) -> None:
        try:
            if self.loop is not None:
                self.loop.run(self.emitter.aclose())
            else:
                close = getattr(self.emitter, "close", None) or self.emitter.aclose
                close()
        finally:
            if self.loop is not None:
                self.loop.stop()


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_emitter_reaches_clients_on_every_node(redis_server: Any, mesh: Mesh, kind: str) -> None:
    em = EmitterHandle(kind, redis_server.url)
    try:

        def barrier(token: str) -> None:
            em(lambda e: e.clients.all.send("Receive", "barrier", token))

        def emit(kind_: str, proxy: Callable[[Any], Any], receivers: str) -> None:
            payload = unique(f"emit-{kind_}")
            em(lambda e: proxy(e.clients).send("Receive", kind_, payload))
            expect_delivery(kind_, payload, [mesh[n] for n in receivers.split()], mesh.all, barrier)

        m = mesh
        emit("all", lambda c: c.all, "a1 a2 b1 b2 c1 c2")
        emit("all_except", lambda c: c.all_except([m.a1.id, m.c2.id]), "a2 b1 b2 c1")
        emit("group", lambda c: c.group(m.g), "a1 b1 b2 c1")
        emit("group_except", lambda c: c.group_except(m.g, [m.b2.id]), "a1 b1 c1")
        emit("user", lambda c: c.user(m.bob), "a2 c2")
        emit("users", lambda c: c.users([m.bob, m.cat]), "a2 c1 c2")
        emit("client", lambda c: c.client(m.b1.id), "b1")
        emit("clients", lambda c: c.clients([m.a2.id, m.c1.id]), "a2 c1")

        # group membership from outside every node
        h = unique("h")
        em(lambda e: e.groups.add(m.c2.id, h))
        em(lambda e: e.groups.add(m.a2.id, h))
        assert set(m.b1.invoke("PresenceGroupMembers", h)) == {m.a2.id, m.c2.id}
        emit("group", lambda c: c.group(h), "a2 c2")
        em(lambda e: e.groups.remove(m.c2.id, h))
        emit("group", lambda c: c.group(h), "a2")

        # and disconnects: one connection, then every connection of a user
        em(lambda e: e.abort(m.c1.id))
        m.c1.wait_closed(timeout=3)
        assert all(p.state() == "Connected" for p in m.all if p is not m.c1)
        em(lambda e: e.abort_user(m.bob))
        m.a2.wait_closed(timeout=3)
        m.c2.wait_closed(timeout=3)
        spared = [m.a1, m.b1, m.b2]
        assert all(p.state() == "Connected" and not p.closes() for p in spared)
    finally:
        em.close()


# --------------------------------------------------------------------------- presence


def test_presence_follows_connects_and_disconnects(
    cluster: list[Any], inproc: InProcessNode, puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    g, ann, bob = unique("g"), unique("ann"), unique("bob")
    a = puppets.connect(url[0], name="a", user=ann, groups=[g])
    b = puppets.connect(url[1], name="b", user=ann, protocol="messagepack")
    c = puppets.connect(url[2], name="c", user=bob, groups=[g])
    d = puppets.connect(inproc.hub_url, name="d")
    every = [a, b, c, d]

    def snapshot(observer: Puppet) -> dict[str, Any]:
        return observer.invoke("PresenceSnapshot", [g], [ann, bob])

    want = {
        "connections": sorted(p.id for p in every),
        "count": 4,
        "groups": {g: sorted([a.id, c.id])},
        "users": {ann: sorted([a.id, b.id]), bob: [c.id]},
        "online": {ann: True, bob: True},
    }
    for observer in (a, c):  # asked on two nodes, the answers agree
        eventually(
            lambda o=observer: snapshot(o),
            lambda s: {k: s[k] for k in want} == want,
            DELIVERY_TIMEOUT,
            f"presence seen from {observer.name}",
        )
    assert a.invoke("PresenceGroupsOf", c.id) == [g]
    assert c.invoke("PresenceGroupsOf", b.id) == []
    assert c.invoke("PresenceGroupsOf", unique("nobody")) == []
    # the three processes and the in-process node (a node another test module killed may
    # still be listed until its presence times out)
    assert len(snapshot(a)["nodes"]) >= len(cluster) + 1

    c.stop()  # bob's only connection, on node 3
    b.stop()  # one of ann's two
    want = {
        "connections": sorted([a.id, d.id]),
        "count": 2,
        "groups": {g: [a.id]},
        "users": {ann: [a.id], bob: []},
        "online": {ann: True, bob: False},
    }
    for observer in (a, d):
        eventually(
            lambda o=observer: snapshot(o),
            lambda s: {k: s[k] for k in want} == want,
            DELIVERY_TIMEOUT,
            f"presence after disconnects seen from {observer.name}",
        )
    assert a.invoke("PresenceGroupsOf", c.id) == []


def test_presence_forgets_a_killed_node(
    redis_server: Any, cluster: list[Any], hubplane_server: Any, puppets: Puppets
) -> None:
    url = [n.hub_url(HUB_PATH) for n in cluster]
    g, shared, lonely = unique("g"), unique("sam"), unique("lou")
    observer = puppets.connect(url[0], name="observer")
    nodes_before = set(observer.invoke("PresenceSnapshot", [], [])["nodes"])

    doomed = start_nodes(hubplane_server, redis_server.url, 1)[0]
    k1 = puppets.connect(doomed.hub_url(HUB_PATH), name="k1", user=lonely, groups=[g])
    k2 = puppets.connect(doomed.hub_url(HUB_PATH), name="k2", user=shared, protocol="messagepack")
    s1 = puppets.connect(url[1], name="s1", user=shared, groups=[g])

    def snapshot() -> dict[str, Any]:
        return observer.invoke("PresenceSnapshot", [g], [shared, lonely])

    before = eventually(
        snapshot,
        lambda s: (
            {k1.id, k2.id, s1.id} <= set(s["connections"])
            and s["groups"][g] == sorted([k1.id, s1.id])
            and s["online"][lonely]
            and len(set(s["nodes"]) - nodes_before) == 1
        ),
        DELIVERY_TIMEOUT,
        "the new node and its connections in presence",
    )
    (doomed_id,) = set(before["nodes"]) - nodes_before

    killed_at = time.monotonic()
    doomed.kill()  # SIGKILL: no goodbye to Redis
    after = eventually(
        snapshot,
        lambda s: (
            not {k1.id, k2.id} & set(s["connections"])
            and doomed_id not in s["nodes"]
            and s["groups"][g] == [s1.id]
            and s["users"][shared] == [s1.id]
            and s["online"] == {shared: True, lonely: False}
        ),
        PRESENCE_TIMEOUT + 4,
        "the killed node's connections leaving presence",
    )
    elapsed = time.monotonic() - killed_at
    assert elapsed <= PRESENCE_TIMEOUT + 2.0, f"presence forgot the dead node after {elapsed:.2f}s"
    assert s1.id in after["connections"] and observer.id in after["connections"]
    assert after["count"] == len(after["connections"])
    assert set(after["nodes"]) <= nodes_before
    k1.wait_closed(timeout=5)
    # the cluster goes on without it
    payload = unique("after-kill")
    observer.invoke("SendGroup", g, payload)
    s1.wait_for("group", payload)


# --------------------------------------------------------------------------- channel prefix


def test_channel_prefix_separates_clusters_on_one_redis(
    redis_server: Any, cluster: list[Any], hubplane_server: Any, puppets: Puppets
) -> None:
    prefix = unique("other") + ":"
    others = start_nodes(hubplane_server, redis_server.url, 2, channel_prefix=prefix)
    g, user = unique("g"), unique("gus")  # the same names in both clusters
    url = [n.hub_url(HUB_PATH) for n in cluster]
    m0 = puppets.connect(url[0], name="m0", user=user, groups=[g])
    m2 = puppets.connect(url[2], name="m2", user=user, groups=[g], protocol="messagepack")
    o0 = puppets.connect(others[0].hub_url(HUB_PATH), name="o0", user=user, groups=[g])
    o1 = puppets.connect(others[1].hub_url(HUB_PATH), name="o1", user=user, groups=[g])
    mains, other_side = [m0, m2], [o0, o1]

    sent: list[tuple[str, str, list[Puppet]]] = []
    for sender, group in ((m0, mains), (o1, other_side)):
        for kind, method, args in (
            ("all", "SendAll", []),
            ("group", "SendGroup", [g]),
            ("user", "SendUser", [user]),
        ):
            payload = unique(f"{sender.name}-{kind}")
            sender.invoke(method, *args, payload)
            sent.append((kind, payload, group))
    for kind, payload, group in sent:
        for p in group:
            p.wait_for(kind, payload)  # each cluster works across its own nodes

    def leaked() -> bool:
        return any(
            p.count(k, v) for k, v, group in sent for p in mains + other_side if p not in group
        )

    # nothing can be awaited for a message that must not come: give it a moment to show up
    assert not puppets.wait_until(leaked, 0.5), "a broadcast crossed the channel prefix"
    for p in mains + other_side:
        assert sum(1 for args in p.messages() if args[0] in ("all", "group", "user")) == 3, p

    # presence is per prefix too
    assert set(o0.invoke("PresenceUserConnections", user)) == {o0.id, o1.id}
    assert set(m2.invoke("PresenceUserConnections", user)) == {m0.id, m2.id}
    assert set(o0.invoke("PresenceConnections")) == {o0.id, o1.id}
    assert len(o1.invoke("PresenceNodes")) == 2

    # and so is an emitter with that prefix
    em = EmitterHandle("sync", redis_server.url, channel_prefix=prefix)
    try:
        payload = unique("emitted")
        em(lambda e: e.clients.all.send("Receive", "all", payload))
        o0.wait_for("all", payload)
        o1.wait_for("all", payload)
        assert not puppets.wait_until(lambda: bool(m0.count("all", payload)), 0.3)
        assert m2.count("all", payload) == 0
    finally:
        em.close()
