"""Conformance run of the official ``@microsoft/signalr`` JS client against ``hubplane serve``.

One server process serves the module. For each protocol (JSON and MessagePack) all scenarios
below run one after another in a single Node process (Node start-up costs ~100 ms); each test
then asserts on what its own scenario logged. Scenarios are registered with ``@scenario``
and named after the test function.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

PROTOCOLS = ["json", "messagepack"]
HUBS = {
    "/hubs/e2e": "tests.e2e.hubs:E2EHub",
    "/hubs/reject": "tests.e2e.hubs:RejectingHub",
    "/hubs/crash": "tests.e2e.hubs:CrashingConnectHub",
}
SERVER_ARGS = ["--authenticator", "tests.e2e.hubs:authenticate", "--log-level", "warning"]

# Helpers every scenario can use (the driver provides connect, log, within, ...).
PRELUDE = """
const inv = async (c, ...a) => { try { return { ok: await c.invoke(...a) }; } catch (e) { return { err: errorText(e) }; } };
const closed = (c) => { const d = deferred(); c.onclose((e) => d.resolve(e ? errorText(e) : null)); return d.promise; };
const syncAll = (...cs) => Promise.all(cs.map((c) => c.invoke("Sync")));
const collectStream = (c, ...args) => new Promise((resolve) => {
  const items = [];
  c.stream(...args).subscribe({
    next: (v) => items.push(v),
    complete: () => resolve({ items, completed: true }),
    error: (e) => resolve({ items, error: errorText(e) }),
  });
});
"""

SCENARIOS: dict[str, str] = {}


def scenario(code: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``code`` as the JS scenario of the decorated test."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        SCENARIOS[fn.__name__] = textwrap.dedent(code)
        return fn

    return register


@pytest.fixture(scope="module")
def server(module_hubplane_server):
    return module_hubplane_server(HUBS, extra_args=SERVER_ARGS)


@pytest.fixture(scope="module", params=PROTOCOLS)
def protocol(request):
    return request.param


def _scenario_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "scenario_name", fn.__name__)


@pytest.fixture(scope="module")
def batch(request, server, node_client, protocol):
    # run only the scenarios of the tests selected in this session (-k, node ids)
    wanted = {
        _scenario_name(item.function)
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "function")
    }
    scenarios = {name: PRELUDE + code for name, code in SCENARIOS.items() if name in wanted}
    return node_client.run_many(
        scenarios,
        url=server.hub_url("/hubs/e2e"),
        protocol=protocol,
        timeout=100,
        scenario_timeout=20,
    )


@pytest.fixture
def result(request, batch):
    """The finished scenario named after the requesting test (asserted to have completed)."""
    return batch[_scenario_name(request.function)].ok()


# --------------------------------------------------------------------------- results


@scenario("""
    const c = await connect();
    log("add", await c.invoke("Add", 1, 2));
    log("add_lower", await c.invoke("add", 40, 2));
    log("add_upper", await c.invoke("ADD", 2, 3));
    log("snake", typeof (await c.invoke("get_connection_id")));
    log("camel", typeof (await c.invoke("getConnectionId")));
    log("sync_method", await c.invoke("EchoSync", "plain def"));
    log("renamed", await inv(c, "Whoami"));
    log("python_name_of_renamed", await inv(c, "Who"));
    const value = { s: "héllo ✓ \\u001e", i: -17, f: 1.5, b: true, n: null, list: [1, "two", [3], { four: 4 }],
                    nested: { deep: { deeper: ["x"] } }, empty: {}, emptyList: [] };
    log("echo", await c.invoke("Echo", value));
    log("echo_big_int", await c.invoke("Echo", 9007199254740991));
    log("echo_null", await c.invoke("Echo", null));
""")
def test_invoke_returns_results(result):
    assert result.value("add") == 3
    assert result.value("add_lower") == 42
    assert result.value("add_upper") == 5
    assert result.value("snake") == "string"
    assert result.value("camel") == "string"
    assert result.value("sync_method") == "plain def"
    assert result.value("renamed") == {"ok": None}  # anonymous caller
    # @hub_method("Whoami") replaces the Python name
    assert result.value("python_name_of_renamed") == {
        "err": "Failed to invoke 'Who' due to an error on the server. "
        "HubException: Method does not exist."
    }
    assert result.value("echo") == {
        "s": "héllo ✓ \x1e",
        "i": -17,
        "f": 1.5,
        "b": True,
        "n": None,
        "list": [1, "two", [3], {"four": 4}],
        "nested": {"deep": {"deeper": ["x"]}},
        "empty": {},
        "emptyList": [],
    }
    assert result.value("echo_big_int") == 9007199254740991
    assert result.value("echo_null") is None


@scenario("""
    const c = await connect();
    log("void", await c.invoke("Nothing"));
    log("none_value", await c.invoke("Maybe"));
    log("item_set", await c.invoke("GetItem", "nothing_called"));
""")
def test_void_and_null_results(result, node_client):
    # a void method's Completion has no result (JS: undefined), -> str | None gives null
    assert result.value("void") == node_client.UNDEFINED
    assert result.value("none_value") is None
    assert result.value("item_set") is True


@scenario("""
    if (protocol !== "messagepack") { log("skipped", true); return; }
    const c = await connect();
    const bytes = new Uint8Array([0, 1, 2, 254, 255]);
    const back = await c.invoke("Echo", bytes);
    log("is_bytes", back instanceof Uint8Array);
    log("bytes", back);
    log("float", await c.invoke("Echo", 0.1));
""")
def test_messagepack_binary_values(result, protocol):
    if protocol != "messagepack":
        assert result.value("skipped") is True
        return
    assert result.value("is_bytes") is True
    assert result.value("bytes") == b"\x00\x01\x02\xfe\xff"
    assert result.value("float") == 0.1


@scenario("""
    const c = await connect();
    const fired = deferred();
    c.on("Fired", (v) => fired.resolve(v));
    log("send_resolved", await c.send("Fire", "payload-1"));
    log("fired", await within(fired.promise, 5000, "Fired push"));
    log("item", await c.invoke("GetItem", "fired"));
    // a failing method called with send() answers nothing, and the connection stays up
    await c.send("FireAndFail");
    await c.send("NoSuchMethod", 1, 2, 3);
    await c.send("Add", 1);
    log("after", await c.invoke("Add", 2, 2));
    log("state", c.state);
""")
def test_send_without_reply(result, node_client):
    assert result.value("send_resolved") == node_client.UNDEFINED
    assert result.value("fired") == "payload-1"
    assert result.value("item") == "payload-1"
    assert result.value("after") == 4
    assert result.value("state") == "Connected"


@scenario("""
    const c = await connect();
    const got = [];
    c.on("receiveGreeting", (...args) => { got.push(args); });   // the JS client matches names case-insensitively
    await c.invoke("PushCaller", "ReceiveGreeting", { text: "hi", n: 1 });
    await c.invoke("Sync");
    log("got", got);
    const seq = [];
    c.on("Seq", (i) => { seq.push(i); });
    await c.invoke("PushMany", 200);
    await c.invoke("Sync");
    log("seq", seq);
""")
def test_server_push_to_caller(result):
    assert result.value("got") == [[{"text": "hi", "n": 1}]]
    assert result.value("seq") == list(range(200))


# --------------------------------------------------------------------------- proxies

PROXY_EXPECTATIONS = {
    # proxy: who receives (a = alice#1 in g1, b = bob in g1+g2, c = alice#2 in g2, d = carol in g3)
    "all": {"a": 1, "b": 1, "c": 1, "d": 1},
    "caller": {"a": 1},
    "others": {"b": 1, "c": 1, "d": 1},
    "client": {"b": 1},
    "clients": {"b": 1, "d": 1},
    "all_except": {"a": 1, "d": 1},
    "group": {"a": 1, "b": 1},
    "groups": {"a": 1, "b": 1, "d": 1},
    "group_except": {"a": 1},
    "others_in_group": {"b": 1},
    "user": {"a": 1, "c": 1},
    "users": {"a": 1, "b": 1, "c": 1},
}


@scenario("""
    const a = await connect({ query: { user: "alice", groups: "g1" } });
    const b = await connect({ query: { user: "bob", groups: "g1,g2" } });
    const c = await connect({ query: { user: "alice", groups: "g2" } });
    const d = await connect({ query: { user: "carol", groups: "g3" } });
    const conns = { a, b, c, d };
    const seen = {};
    for (const [name, conn] of Object.entries(conns)) {
      conn.on("Receive", (proxy, payload) => { seen[name].push([proxy, payload]); });
    }
    const run = async (proxy, method, ...args) => {
      for (const name of Object.keys(conns)) seen[name] = [];
      const payload = "p-" + proxy;
      await a.invoke(method, ...args, payload);
      await syncAll(a, b, c, d);   // every earlier push to each connection has arrived
      const counts = {};
      for (const [name, got] of Object.entries(seen)) {
        const mine = got.filter(([p, v]) => p === proxy && v === payload).length;
        if (mine) counts[name] = mine;
        if (got.length !== mine) log("unexpected", { proxy, name, got });
      }
      log(proxy, counts);
    };
    await run("all", "SendAll");
    await run("caller", "SendCaller");
    await run("others", "SendOthers");
    await run("client", "SendClient", b.connectionId);
    await run("clients", "SendClients", [b.connectionId, d.connectionId]);
    await run("all_except", "SendAllExcept", [b.connectionId, c.connectionId]);
    await run("group", "SendGroup", "g1");
    await run("groups", "SendGroups", ["g1", "g3"]);
    await run("group_except", "SendGroupExcept", "g1", [b.connectionId]);
    await run("others_in_group", "SendOthersInGroup", "g1");
    await run("user", "SendUser", "alice");
    await run("users", "SendUsers", ["alice", "bob"]);
    await run("empty_group", "SendGroup", "nobody-here");
    await run("unknown_client", "SendClient", "no-such-connection");
""")
@pytest.mark.parametrize("proxy", sorted(PROXY_EXPECTATIONS))
def test_client_proxies(result, proxy):
    assert result.value(proxy) == PROXY_EXPECTATIONS[proxy]
    assert result.values("unexpected") == []


def test_client_proxies_with_no_recipient(result):
    assert result.value("empty_group") == {}
    assert result.value("unknown_client") == {}


test_client_proxies_with_no_recipient.scenario_name = "test_client_proxies"  # type: ignore[attr-defined]


@scenario("""
    const a = await connect();
    const b = await connect();
    const c = await connect();
    const seen = { a: [], b: [], c: [] };
    for (const [n, conn] of Object.entries({ a, b, c })) conn.on("Receive", (p, v) => { seen[n].push(v); });
    const step = async (label) => {
      await a.invoke("SendGroup", "room", label);
      await syncAll(a, b, c);
    };
    await a.invoke("Join", "room");
    await b.invoke("Join", "room");
    await step("both");
    await a.invoke("Join", "room");           // joining twice changes nothing
    await step("twice");
    await a.invoke("Leave", "room");
    await step("after-leave");
    await a.invoke("AddToGroup", c.connectionId, "room");   // add another connection by id
    await step("c-added");
    await b.invoke("Leave", "not-a-member");   // harmless
    log("seen", seen);
""")
def test_groups_add_and_remove(result):
    assert result.value("seen") == {
        "a": ["both", "twice"],
        "b": ["both", "twice", "after-leave", "c-added"],
        "c": ["c-added"],
    }


# --------------------------------------------------------------------------- errors


@scenario("""
    const c = await connect();
    log("hub", await inv(c, "FailHub", "custom text ünïcødé: 42"));
    log("hub_lower", await inv(c, "failHub", "x"));
    log("other", await inv(c, "FailOther"));
    log("unknown", await inv(c, "NoSuchMethod", 1));
    log("too_few", await inv(c, "Add", 1));
    log("too_many", await inv(c, "Add", 1, 2, 3));
    log("still_works", await c.invoke("Add", 20, 22));
    log("state", c.state);
""")
def test_error_texts(result):
    assert result.value("hub") == {
        "err": "An unexpected error occurred invoking 'FailHub' on the server. "
        "HubException: custom text ünïcødé: 42"
    }
    # 'X' is the target exactly as the client sent it
    assert result.value("hub_lower") == {
        "err": "An unexpected error occurred invoking 'failHub' on the server. HubException: x"
    }
    assert result.value("other") == {
        "err": "An unexpected error occurred invoking 'FailOther' on the server."
    }
    assert result.value("unknown") == {
        "err": "Failed to invoke 'NoSuchMethod' due to an error on the server. "
        "HubException: Method does not exist."
    }
    assert result.value("too_few") == {
        "err": "Failed to invoke 'Add' due to an error on the server."
    }
    assert result.value("too_many") == {
        "err": "Failed to invoke 'Add' due to an error on the server."
    }
    assert result.value("still_works") == 42
    assert result.value("state") == "Connected"


# --------------------------------------------------------------------------- streams


@scenario("""
    const c = await connect();
    log("counter", await collectStream(c, "Counter", 5));
    log("counter_delay", await collectStream(c, "Counter", 3, 0.01));
    log("empty", await collectStream(c, "Counter", 0));
    log("failing", await collectStream(c, "FailingStream", 2));
    log("stream_as_invoke", await inv(c, "Counter", 3));
    log("invoke_as_stream", await collectStream(c, "Add", 1, 2));
    log("unknown_stream", await collectStream(c, "NoSuchStream"));
    // two streams at once interleave on one connection
    const [s1, s2] = await Promise.all([collectStream(c, "Counter", 4, 0.005), collectStream(c, "Counter", 3, 0.005)]);
    log("parallel", [s1, s2]);
    log("after", await c.invoke("Add", 1, 1));
""")
def test_server_to_client_streams(result):
    assert result.value("counter") == {"items": [0, 1, 2, 3, 4], "completed": True}
    assert result.value("counter_delay") == {"items": [0, 1, 2], "completed": True}
    assert result.value("empty") == {"items": [], "completed": True}
    assert result.value("failing") == {
        "items": [0, 1],
        "error": "An error occurred on the server while streaming results. "
        "HubException: stream broke",
    }
    assert result.value("stream_as_invoke") == {
        "err": "The client attempted to invoke the streaming 'Counter' method with a "
        "non-streaming invocation."
    }
    assert result.value("invoke_as_stream") == {
        "items": [],
        "error": "The client attempted to invoke the non-streaming 'Add' method with a "
        "streaming invocation.",
    }
    assert result.value("unknown_stream") == {
        "items": [],
        "error": "Failed to invoke 'NoSuchStream' due to an error on the server. "
        "HubException: Method does not exist.",
    }
    assert result.value("parallel") == [
        {"items": [0, 1, 2, 3], "completed": True},
        {"items": [0, 1, 2], "completed": True},
    ]
    assert result.value("after") == 2


@scenario("""
    const c = await connect();
    const subject = new signalR.Subject();
    const pending = c.invoke("UploadSum", subject);
    for (const n of [1, 2, 3, 4]) subject.next(n);
    subject.complete();
    log("sum", await within(pending, 5000, "UploadSum"));
    const empty = new signalR.Subject();
    const pendingEmpty = c.invoke("UploadSum", empty);
    empty.complete();
    log("empty", await within(pendingEmpty, 5000, "UploadSum empty"));
""")
def test_client_to_server_stream(batch):
    result = batch["test_client_to_server_stream"].ok()
    assert result.value("sum") == 10
    assert result.value("empty") == 0


@scenario("""
    const c = await connect();
    const items = [];
    const three = deferred();
    let completed = false, failed = null;
    const sub = c.stream("Endless", 0.02).subscribe({
      next: (v) => { items.push(v); if (items.length === 3) three.resolve(); },
      complete: () => { completed = true; },
      error: (e) => { failed = errorText(e); },
    });
    await within(three.promise, 5000, "three stream items");
    sub.dispose();                       // sends CancelInvocation
    const atDispose = items.length;
    let events = [];
    for (let i = 0; i < 50; i++) {       // the server side ends promptly
      events = await c.invoke("StreamEvents");
      if (events.includes("finally")) break;
      await sleep(50);
    }
    await sleep(100);
    log("events", events);
    log("items_after_dispose", items.length - atDispose);
    log("completed", completed);
    log("failed", failed);
    log("after", await c.invoke("Add", 3, 4));
""")
def test_stream_cancellation_by_dispose(result):
    events = result.value("events")
    assert events[0] == "started"
    assert "finally" in events, "the generator was not closed after CancelInvocation"
    assert result.value("items_after_dispose") == 0  # the JS client dropped its callbacks
    assert result.value("completed") is False
    assert result.value("failed") is None
    assert result.value("after") == 7


# --------------------------------------------------------------------------- lifecycle


@scenario("""
    const w = await connect({ query: { watch: "1" } });
    const events = [];
    w.on("Events", (...e) => { events.push(e); });
    const c = await connect({ query: { user: "dave" } });
    const id = c.connectionId;
    await within((async () => { while (!events.some((e) => e[0] === "connected" && e[1] === id)) await sleep(20); })(), 5000, "connected event");
    await c.stop();
    log("state_after_stop", c.state);
    await within((async () => { while (!events.some((e) => e[0] === "disconnected" && e[1] === id)) await sleep(20); })(), 5000, "disconnected event");
    await sleep(300);                    // a second on_disconnected would show up here
    log("events", events.filter((e) => e[1] === id));
""")
def test_stop_runs_on_disconnected_once(result):
    assert result.value("state_after_stop") == "Disconnected"
    events = result.value("events")
    assert events == [["connected", events[0][1], "dave"], ["disconnected", events[0][1], None]]


@scenario("""
    const w = await connect({ query: { watch: "1" } });
    const events = [];
    w.on("Events", (...e) => { events.push(e); });
    const c = await connect({ reconnect: [0, 100, 200] });
    const id = c.connectionId;
    let reconnecting = 0;
    c.onreconnecting(() => reconnecting++);
    const done = closed(c);
    // the Completion may or may not beat the Close (the reference server drops it)
    await c.invoke("AbortMe").catch((e) => log("abort_invoke", errorText(e)));
    log("close_error", await within(done, 5000, "onclose after abort()"));
    await within((async () => { while (!events.some((e) => e[0] === "disconnected" && e[1] === id)) await sleep(20); })(), 5000, "disconnected event");
    await sleep(300);
    log("reconnecting", reconnecting);
    log("state", c.state);
    log("disconnects", events.filter((e) => e[0] === "disconnected" && e[1] === id).length);
""")
def test_abort_closes_without_reconnect(result):
    # abort() sends a Close message without allowReconnect, as Context.Abort() does: the
    # client must not reconnect even though automatic reconnect is on
    assert result.value("close_error") is None
    assert result.value("reconnecting") == 0
    assert result.value("state") == "Disconnected"
    assert result.value("disconnects") == 1


@scenario("""
    const c = await connect({ reconnect: [0, 100, 200, 400], query: { user: "erin" } });
    const oldId = c.connectionId;
    const reconnecting = deferred(), reconnected = deferred();
    c.onreconnecting((e) => reconnecting.resolve(e ? errorText(e) : null));
    c.onreconnected((id) => reconnected.resolve(id));
    await c.invoke("SetItem", "k", "v");
    await c.invoke("AbortMeAllowReconnect").catch((e) => log("abort_invoke", errorText(e)));
    log("reconnecting_error", await within(reconnecting.promise, 5000, "onreconnecting"));
    const newId = await within(reconnected.promise, 5000, "onreconnected");
    log("new_id_differs", newId !== oldId && typeof newId === "string" && newId.length > 0);
    log("client_id_updated", c.connectionId === newId);
    log("server_id", (await c.invoke("GetConnectionId")) === newId);
    log("user", await c.invoke("Whoami"));
    log("old_state_gone", await c.invoke("GetItem", "k"));
    log("add", await c.invoke("Add", 5, 5));
""")
def test_abort_with_allow_reconnect_reconnects(result):
    assert result.value("reconnecting_error") is None
    assert result.value("new_id_differs") is True
    assert result.value("client_id_updated") is True
    assert result.value("server_id") is True
    assert result.value("user") == "erin"
    assert result.value("old_state_gone") is None  # a reconnect is a brand-new connection
    assert result.value("add") == 10


@scenario("""
    for (const [path, label] of [["/hubs/reject", "reject"], ["/hubs/crash", "crash"]]) {
      const c = makeConnection({ path, reconnect: [0, 100] });
      let reconnecting = 0;
      c.onreconnecting(() => reconnecting++);
      const done = closed(c);
      let startError = null;
      try { await c.start(); } catch (e) { startError = errorText(e); }
      // onclose fires only when start() had already resolved; else start() rejects with it
      const closeError = startError === null ? await within(done, 5000, "onclose " + label) : startError;
      await sleep(200);
      log(label, { startError, closeError, reconnecting, state: c.state });
    }
""")
def test_close_message_with_error_when_on_connected_fails(result):
    reject = result.value("reject")
    crash = result.value("crash")
    # HubException text is shown; other exceptions give the generic text; no reconnect
    assert reject["closeError"] == (
        "Server returned an error on close: Connection closed with an error. "
        "HubException: you shall not pass"
    )
    assert crash["closeError"] == (
        "Server returned an error on close: Connection closed with an error."
    )
    for r in (reject, crash):
        assert r["reconnecting"] == 0
        assert r["state"] == "Disconnected"
        # start() may resolve (the handshake succeeded) or fail with the close error
        assert r["startError"] in (None, r["closeError"])


# --------------------------------------------------------------------------- negotiate / auth


@scenario("""
    const c = await connect();
    log("client_id", c.connectionId);
    log("server_id", await c.invoke("GetConnectionId"));
    const s = await connect({ skipNegotiation: true });
    log("skip_client_id", s.connectionId === undefined || s.connectionId === null);
    log("skip_server_id", await s.invoke("GetConnectionId"));
    log("skip_add", await s.invoke("Add", 1, 2));
    log("skip_ctx", await s.invoke("GetContext"));
""")
def test_negotiated_and_skipped_connection_ids(result, protocol):
    client_id = result.value("client_id")
    assert isinstance(client_id, str) and client_id
    assert result.value("server_id") == client_id
    assert result.value("skip_client_id") is True
    skip_server_id = result.value("skip_server_id")
    assert isinstance(skip_server_id, str) and skip_server_id and skip_server_id != client_id
    assert result.value("skip_add") == 3
    ctx = result.value("skip_ctx")
    assert ctx["transport"] == "WebSockets" and ctx["protocol"] == protocol


@scenario("""
    const anon = await connect({ query: { tag: "q1" }, headers: { "X-Tag": "h1" } });
    log("anon", await anon.invoke("GetContext"));
    const alice = await connect({ query: { user: "alice", role: "admin" } });
    log("alice", await alice.invoke("GetContext"));
    const bob = await connect({ headers: { "X-User": "bob" } });
    log("bob", await bob.invoke("Whoami"));
    const skip = await connect({ skipNegotiation: true, query: { user: "sam" } });
    log("skip", await skip.invoke("Whoami"));
    let tokenCalls = 0;
    const tina = await connect({ accessTokenFactory: () => { tokenCalls++; return "tina"; } });
    log("bearer", await tina.invoke("Whoami"));
    log("token_calls", tokenCalls);
""")
def test_context_and_authenticator(result, protocol):
    anon = result.value("anon")
    assert anon["userIdentifier"] is None and anon["userId"] is None
    assert anon["transport"] == "WebSockets"
    assert anon["protocol"] == protocol
    assert anon["queryTag"] == "q1"
    assert anon["headerTag"] == "h1"  # Node's WebSocket sends the configured headers
    assert anon["connectedFlag"] is True  # items set in on_connected are visible later
    alice = result.value("alice")
    assert alice["userIdentifier"] == "alice" and alice["roles"] == ["admin"]
    assert result.value("bob") == "bob"
    assert result.value("skip") == "sam"
    # accessTokenFactory: Authorization: Bearer on negotiate and on the WebSocket (Node)
    assert result.value("bearer") == "tina"
    assert result.value("token_calls") >= 1


@scenario("""
    const conns = await Promise.all([1, 2, 3, 4, 5].map(() => connect()));
    const results = await Promise.all(conns.flatMap((c, i) =>
      Array.from({ length: 20 }, (_, j) => c.invoke("Add", i * 100, j))));
    const expected = conns.flatMap((_, i) => Array.from({ length: 20 }, (_, j) => i * 100 + j));
    log("all_correct", JSON.stringify(results) === JSON.stringify(expected));
    log("count", results.length);
""")
def test_concurrent_invocations(result):
    assert result.value("count") == 100
    assert result.value("all_correct") is True


@scenario("""
    // The server pings every second, so a 2.5 s client-side server timeout never fires.
    const c = await connect({ serverTimeoutMs: 2500 });
    let closedWith = "open";
    c.onclose((e) => { closedWith = e ? errorText(e) : null; });
    await sleep(4000);
    log("closed", closedWith);
    log("state", c.state);
    log("add", await c.invoke("Add", 1, 1));
""")
def test_server_keepalive_pings_keep_client_alive(result):
    assert result.value("closed") == "open"
    assert result.value("state") == "Connected"
    assert result.value("add") == 2
