"""The official JS client forced onto each transport, with each protocol the transport carries.

The conformance scenarios of ``test_js_client`` (echo and return values, errors, groups and
proxies, streams both ways, server push, close and reconnect) run again over WebSockets,
Server-Sent Events and long polling, and their assertions are reused as they are. One Node
process per transport and protocol runs its scenarios one after another against its own
server; the processes run side by side. Then: transport fallback when WebSockets are not offered, a bearer token that
reaches the authenticator through the query string, and that token never appearing in a log.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e import test_js_client as conformance

pytestmark = pytest.mark.e2e

COMBOS = [
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),  # SSE is text only
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
]

# Conformance scenarios (test functions of test_js_client) run again on every transport.
CASES = [
    "test_invoke_returns_results",
    "test_void_and_null_results",
    "test_messagepack_binary_values",
    "test_send_without_reply",
    "test_server_push_to_caller",
    "test_client_proxies",
    "test_groups_add_and_remove",
    "test_error_texts",
    "test_server_to_client_streams",
    "test_stream_cancellation_by_dispose",
    "test_stop_runs_on_disconnected_once",
    "test_abort_closes_without_reconnect",
    "test_abort_with_allow_reconnect_reconnects",
    "test_close_message_with_error_when_on_connected_fails",
    "test_concurrent_invocations",
]


def run_check(case: str, result: Any, protocol: str, node_client: Any) -> None:
    """Call the conformance test's own assertions with the arguments it asks for."""
    check: Callable[..., None] = getattr(conformance, case)
    if case == "test_client_proxies":
        for proxy in sorted(conformance.PROXY_EXPECTATIONS):
            check(result, proxy)
        conformance.test_client_proxies_with_no_recipient(result)
        return
    available = {"result": result, "protocol": protocol, "node_client": node_client}
    check(**{name: available[name] for name in inspect.signature(check).parameters})


# Scenarios of this module, run in the same batches.
TRANSPORT_SCENARIOS = {
    "context": """
        const c = await connect({ query: { tag: "q1" } });
        log("ctx", await c.invoke("GetContext"));
        // accessTokenFactory: SSE sends the token as access_token in the query string (as
        // browsers must), long polling and WebSockets in Node as Authorization: Bearer.
        const t = await connect({ accessToken: "tina" });
        log("bearer", await t.invoke("Whoami"));
    """,
    "upload": """
        const c = await connect();
        const subject = new signalR.Subject();
        const pending = c.invoke("UploadSum", subject);
        for (const n of [1, 2, 3, 4]) subject.next(n);
        subject.complete();
        log("sum", await within(pending, 5000, "UploadSum"));
    """,
}


@pytest.fixture(scope="module")
def batches(module_hubplane_server: Any, node_client: Any) -> dict[tuple[str, str], Any]:
    scenarios = {name: conformance.SCENARIOS[name] for name in CASES}
    scenarios.update(TRANSPORT_SCENARIOS)
    scenarios = {name: conformance.PRELUDE + code for name, code in scenarios.items()}
    # One server per batch: "all", "others" and the user proxies must see only their batch.
    handles = {}
    for combo in COMBOS:
        server = module_hubplane_server(conformance.HUBS, extra_args=conformance.SERVER_ARGS)
        handles[combo] = node_client.start(
            scenarios,
            url=server.hub_url("/hubs/e2e"),
            transport=combo[0],
            protocol=combo[1],
            timeout=100,
            scenario_timeout=20,
        )
    return {combo: handle.wait(timeout=110) for combo, handle in handles.items()}


def _ids(combo: tuple[str, str]) -> str:
    return f"{combo[0]}-{combo[1]}"


@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
@pytest.mark.parametrize("case", CASES)
def test_conformance_per_transport(
    batches: dict[tuple[str, str], Any], combo: tuple[str, str], case: str, node_client: Any
) -> None:
    result = batches[combo][case].ok()
    run_check(case, result, combo[1], node_client)


@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
def test_transport_in_context_and_bearer_token(
    batches: dict[tuple[str, str], Any], combo: tuple[str, str]
) -> None:
    result = batches[combo]["context"].ok()
    ctx = result.value("ctx")
    assert (ctx["transport"], ctx["protocol"]) == combo
    assert ctx["queryTag"] == "q1"
    assert result.value("bearer") == "tina"
    assert batches[combo]["upload"].ok().value("sum") == 10


def test_fallback_without_websockets_and_no_token_in_logs(
    hubplane_server: Any, node_client: Any
) -> None:
    server = hubplane_server(
        {"/hubs/e2e": "tests.e2e.hubs:E2EHub"},
        extra_args=[
            "--authenticator",
            "tests.e2e.hubs:authenticate",
            "--transports",
            "ServerSentEvents,LongPolling",
            "--log-level",
            "debug",  # the access log is on at debug: it must not show the token
        ],
    )
    secret = "s3cret-token-9f8e7d"
    code = f"""
        for (const protocol of ["json", "messagepack"]) {{
          const c = await connect({{ protocol, transport: "WebSockets,ServerSentEvents,LongPolling",
                                     accessToken: "{secret}" }});
          log(protocol, await c.invoke("GetContext"));
          await c.stop();
        }}
        // A client that wants only WebSockets finds nothing it can use.
        try {{ await connect({{ transport: "WebSockets" }}); log("ws_only", "connected"); }}
        catch (e) {{ log("ws_only", errorText(e)); }}
    """
    result = node_client.run(code, url=server.hub_url("/hubs/e2e"), timeout=30)
    json_ctx, msgpack_ctx = result.value("json"), result.value("messagepack")
    # The client takes the first transport in the server's list that carries its format.
    assert (json_ctx["transport"], json_ctx["protocol"]) == ("ServerSentEvents", "json")
    assert (msgpack_ctx["transport"], msgpack_ctx["protocol"]) == ("LongPolling", "messagepack")
    assert json_ctx["userId"] == msgpack_ctx["userId"] == secret
    assert "Unable to connect to the server with any of the available transports" in (
        result.value("ws_only")
    )
    logs = server.logs()
    assert "access_token=***" in logs  # the SSE request was logged, with its token masked
    assert secret not in logs
