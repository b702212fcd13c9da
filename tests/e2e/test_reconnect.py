"""Automatic reconnect of the official JS client when the server drops it: a server restart
(graceful and SIGKILL) and a server-side client timeout. Each test has its own server."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

PROTOCOLS = ["json", "messagepack"]
HUBS = {"/hubs/e2e": "tests.e2e.hubs:E2EHub"}

RECONNECT_SCENARIO = """
const c = await connect({ reconnect: [0, 100, 200, 300, 500, 500, 1000, 1000, 1000, 1000, 1000, 1000], query: { user: "rita" } });
const reconnecting = deferred(), reconnected = deferred();
c.onreconnecting((e) => reconnecting.resolve(e ? errorText(e) : null));
c.onreconnected((id) => reconnected.resolve(id));
let closedWith = "open";
c.onclose((e) => { closedWith = e ? errorText(e) : null; });
const oldId = c.connectionId;
log("connected", await c.invoke("Add", 1, 1));
log("reconnecting", await within(reconnecting.promise, 15000, "onreconnecting"));
const newId = await within(reconnected.promise, 20000, "onreconnected");
log("new_id", newId !== oldId && c.connectionId === newId);
log("user", await c.invoke("Whoami"));
log("add", await c.invoke("Add", 2, 3));
log("closed", closedWith);
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "sigkill"])
def test_reconnect_after_server_restart(hubplane_server, node_client, protocol, graceful):
    server = hubplane_server(HUBS, extra_args=["--authenticator", "tests.e2e.hubs:authenticate"])
    proc = node_client.start(
        RECONNECT_SCENARIO, url=server.hub_url(), protocol=protocol, timeout=40
    )
    try:
        assert proc.expect("connected", timeout=10) == 2
        server.restart(graceful=graceful)
        run = proc.wait(timeout=40)
    finally:
        proc.kill()
    result = run["main"].ok()
    # a graceful stop may send Close with allowReconnect (an error text is allowed); a
    # killed server just drops the socket
    reconnecting = result.value("reconnecting")
    assert reconnecting is None or isinstance(reconnecting, str)
    assert result.value("new_id") is True
    assert result.value("user") == "rita"
    assert result.value("add") == 5
    assert result.value("closed") == "open"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_timeout_closes_with_allow_reconnect(hubplane_server, node_client, protocol):
    # The JS client pings every 15 s by default; a 1 s server-side client timeout drops it
    # with Close(error, allowReconnect=true), so it reconnects (and is dropped again).
    server = hubplane_server(HUBS, extra_args=["--client-timeout", "1"])
    result = node_client.run(
        """
        const c = await connect({ reconnect: [0, 0, 0, 0, 0, 0, 0, 0] });
        const reconnecting = deferred(), reconnected = deferred();
        c.onreconnecting((e) => reconnecting.resolve(e ? errorText(e) : null));
        c.onreconnected((id) => reconnected.resolve(id));
        const started = Date.now();
        log("reconnecting", await within(reconnecting.promise, 8000, "onreconnecting"));
        log("elapsed_ms", Date.now() - started);
        log("reconnected", typeof (await within(reconnected.promise, 8000, "onreconnected")));
        """,
        url=server.hub_url(),
        protocol=protocol,
        timeout=30,
    )
    assert result.value("reconnecting") == (
        "Server returned an error on close: Connection closed with an error."
    )
    assert 500 <= result.value("elapsed_ms") <= 6000
    assert result.value("reconnected") == "string"
