"""Negotiate, handshake, framing and bad input, with raw WebSocket (``websockets``) and HTTP
(``httpx``) clients that send exactly the bytes a test wants.

After every bad input the module's canary connection must still work.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from .raw import RS, RawClient, pack_frame
from .test_cluster import eventually

pytestmark = pytest.mark.e2e

HUB = "/hubs/e2e"
MAX_MESSAGE_SIZE = 4096
HANDSHAKE_TIMEOUT = 1.5
GENERIC_CLOSE = "Connection closed with an error."
URL_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,}$")


@pytest.fixture(scope="module")
def server(module_hubplane_server):
    return module_hubplane_server(
        {HUB: "tests.e2e.hubs:E2EHub"},
        extra_args=[
            "--max-message-size",
            str(MAX_MESSAGE_SIZE),
            "--handshake-timeout",
            str(HANDSHAKE_TIMEOUT),
            "--log-level",
            "warning",
        ],
    )


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=5.0, trust_env=False) as client:
        yield client


class Canary:
    """A connection opened before the bad inputs; it must keep working after each."""

    def __init__(self, server) -> None:
        self.client = RawClient(server.ws_url(HUB))
        assert self.client.handshake() == {}
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        self.client.send_message({"type": 6})  # also keeps the client-timeout clock fresh
        self.client.invoke("Add", self.calls, 1, invocation_id=f"c{self.calls}")
        msg = self.client.completion()
        assert msg == {"type": 3, "invocationId": f"c{self.calls}", "result": self.calls + 1}


@pytest.fixture(scope="module")
def canary(server):
    c = Canary(server)
    yield c
    c.client.close()


@pytest.fixture
def after_check(canary):
    """Check the canary after the test body ran."""
    yield
    canary.check()


def negotiate(http: httpx.Client, version: int | str | None = 1, path: str = HUB) -> httpx.Response:
    query = "" if version is None else f"?negotiateVersion={version}"
    return http.post(f"{path}/negotiate{query}")


def ws_connect(server, query: str = "", protocol: str = "json") -> RawClient:
    return RawClient(server.ws_url(HUB, query), protocol)


def ws_status(server, query: str) -> int:
    """The HTTP status a WebSocket request for ``query`` is refused with; 101 if it was
    accepted (the socket is closed again at once)."""
    try:
        client = ws_connect(server, query)
    except InvalidStatus as exc:
        return exc.response.status_code
    client.close()
    return 101


# --------------------------------------------------------------------------- negotiate


def test_negotiate_v1_response_shape(http):
    r = negotiate(http, 1)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["negotiateVersion"] == 1
    assert isinstance(body["connectionId"], str) and body["connectionId"]
    token = body["connectionToken"]
    assert URL_SAFE_TOKEN.match(token), f"token not >= 22 URL-safe chars: {token!r}"
    assert token != body["connectionId"]
    transports = body["availableTransports"]
    assert transports[0] == {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
    assert "ProtocolVersion" not in body and "useStatefulReconnect" not in body
    assert "error" not in body and "url" not in body

    other = negotiate(http, 1).json()
    assert other["connectionId"] != body["connectionId"]
    assert other["connectionToken"] != token


def test_negotiate_v0_has_no_token(http):
    for version in (None, 0):
        r = negotiate(http, version)
        assert r.status_code == 200
        body = r.json()
        assert body["negotiateVersion"] == 0
        assert "connectionToken" not in body
        assert URL_SAFE_TOKEN.match(body["connectionId"])
        assert any(t["transport"] == "WebSockets" for t in body["availableTransports"])


def test_negotiate_version_above_max_gets_max(http):
    r = negotiate(http, 7)
    assert r.status_code == 200
    assert r.json()["negotiateVersion"] == 1


def test_negotiate_version_not_a_number_is_an_error_payload(http):
    r = negotiate(http, "abc")
    assert r.status_code == 200  # logical errors are 200 + JSON "error", never 4xx/HTML
    assert isinstance(r.json().get("error"), str) and r.json()["error"]


def test_negotiate_keeps_unknown_query_parameters(http):
    r = http.post(f"{HUB}/negotiate?negotiateVersion=1&foo=bar&_=123")
    assert r.status_code == 200 and "connectionToken" in r.json()


def test_negotiated_v1_token_connects_and_connection_id_does_not(http, server, after_check):
    body = negotiate(http, 1).json()
    with ws_connect(server, f"id={body['connectionToken']}") as c:
        assert c.handshake() == {}
        c.invoke("GetConnectionId")
        assert c.completion()["result"] == body["connectionId"]
    # the public connectionId must not work as a token
    other = negotiate(http, 1).json()
    with pytest.raises(InvalidStatus) as info:
        ws_connect(server, f"id={other['connectionId']}")
    assert info.value.response.status_code == 404


def test_negotiated_v0_connection_id_connects(http, server):
    body = negotiate(http, 0).json()
    with ws_connect(server, f"id={body['connectionId']}") as c:
        assert c.handshake() == {}
        c.invoke("GetConnectionId")
        assert c.completion()["result"] == body["connectionId"]


def test_websocket_with_unknown_id_is_404(server, after_check):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(server, "id=AAAAAAAAAAAAAAAAAAAAAA")
    assert info.value.response.status_code == 404


def test_token_cannot_be_used_twice(http, server, after_check):
    token = negotiate(http, 1).json()["connectionToken"]
    first = ws_connect(server, f"id={token}")
    try:
        assert first.handshake() == {}
        with pytest.raises(InvalidStatus) as info:  # a second socket for a live connection
            ws_connect(server, f"id={token}")
        assert info.value.response.status_code in (404, 409)
        first.invoke("Add", 1, 2)
        assert first.completion()["result"] == 3
    finally:
        first.close()
    # The connection has ended: its token is gone. The server ends it just after the close
    # (409 until then, the token still belonging to a live connection).
    status = eventually(
        lambda: ws_status(server, f"id={token}"), lambda s: s != 409, 5.0, "the connection's end"
    )
    assert status == 404


def test_invalid_http_requests_get_4xx(http, after_check):
    assert http.get(f"{HUB}/negotiate").status_code == 405
    assert http.post("/hubs/nope/negotiate?negotiateVersion=1").status_code == 404
    assert http.post("/not-a-hub/negotiate").status_code == 404
    r = http.put(HUB)
    assert 400 <= r.status_code < 500


def test_hub_path_with_trailing_slash(http, server):
    # with a hub URL ending in "/" the JS client negotiates at {base}/negotiate and then
    # opens {base}/?id=...
    token = negotiate(http, 1).json()["connectionToken"]
    with RawClient(server.ws_url(HUB + "/", f"id={token}")) as c:
        assert c.handshake() == {}
        c.invoke("Add", 1, 2)
        assert c.completion()["result"] == 3


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_handshake_success_and_frame_types(server, protocol, after_check):
    with ws_connect(server, protocol=protocol) as c:
        assert c.handshake() == {}
        c.invoke("Add", 2, 3, invocation_id="7")
        msg = c.completion()
        if protocol == "json":
            assert msg == {"type": 3, "invocationId": "7", "result": 5}
            assert all(isinstance(f, str) for f in c.frames), "JSON must use text frames"
        else:
            assert msg[0] == 3 and msg[2] == "7" and msg[3] == 3 and msg[4] == 5
            assert all(isinstance(f, bytes) for f in c.frames[1:]), (
                "MessagePack must use binary frames"
            )


def test_malformed_handshake_json(server, after_check):
    with ws_connect(server) as c:
        c.send_text('{"protocol": "json", "version": ' + RS)
        reply = c.read_handshake()
        assert reply.get("error", "").startswith(
            "An unexpected error occurred during connection handshake."
        ), reply
        assert "type" not in reply
        c.wait_closed()


def test_unknown_protocol(server, after_check):
    with ws_connect(server) as c:
        c.send_text('{"protocol":"x","version":1}' + RS)
        assert c.read_handshake() == {"error": "The protocol 'x' is not supported."}
        c.wait_closed()


def test_unsupported_protocol_version(server, after_check):
    with ws_connect(server) as c:
        c.send_text('{"protocol":"json","version":99}' + RS)
        assert c.read_handshake() == {
            "error": "The server does not support version 99 of the 'json' protocol."
        }
        c.wait_closed()


def test_handshake_timeout(server, after_check):
    started = time.monotonic()
    with ws_connect(server) as c:
        reply = c.read_handshake(timeout=HANDSHAKE_TIMEOUT + 5)
        assert reply == {"error": "Handshake was canceled."}
        c.wait_closed()
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 3


def test_handshake_and_messages_in_one_frame(server, after_check):
    with ws_connect(server) as c:
        c.send_text(
            '{"protocol":"json","version":1}'
            + RS
            + '{"target":"Add","arguments":[1,2],"invocationId":"0","type":1}'
            + RS
            + '{"type":1,"invocationId":"1","target":"Echo","arguments":["x"]}'
            + RS
        )
        assert c.read_handshake() == {}
        assert c.completion() == {"type": 3, "invocationId": "0", "result": 3}
        assert c.completion() == {"type": 3, "invocationId": "1", "result": "x"}


def test_unknown_message_fields_and_types_are_ignored(server, after_check):
    with ws_connect(server) as c:
        assert c.handshake() == {}
        c.send_text('{"type":99,"whatever":1}' + RS)  # unknown type: ignored
        c.send_text(
            '{"type":1,"invocationId":"u","target":"Add","arguments":[1,1],"extra":{"a":1},'
            '"headers":{"k":"v"}}' + RS
        )
        assert c.completion() == {"type": 3, "invocationId": "u", "result": 2}


def test_non_blocking_invocations_get_no_reply(server, after_check):
    with ws_connect(server) as c:
        assert c.handshake() == {}
        c.invoke("FireAndFail", invocation_id=None)
        c.invoke("NoSuchMethod", 1, invocation_id=None)
        c.invoke("Add", 1, invocation_id=None)
        c.invoke("FailOther", invocation_id=None)
        c.invoke("Add", 5, 6, invocation_id="last")
        # the next message after the pings is the Completion of "last": nothing for the others
        assert c.completion() == {"type": 3, "invocationId": "last", "result": 11}


def test_server_pings_on_idle_connection(server):
    with ws_connect(server) as c:
        assert c.handshake() == {}
        msg = c.next_message(timeout=5, skip_pings=False)  # keep-alive interval is 1 s here
        assert msg == {"type": 6}


def test_client_close_message_ends_connection(server, after_check):
    with ws_connect(server) as c:
        assert c.handshake() == {}
        c.send_text('{"type":7}' + RS)
        seen = c.wait_closed()
        assert all(m.get("type") in (6, 7) for m in seen), seen
        assert all("error" not in m for m in seen), seen


# --------------------------------------------------------------------------- bad frames


def _assert_closed_with_error(c: RawClient, seen: list) -> None:
    closes = [m for m in seen if RawClient.type_of(m) == 7]
    assert closes, f"no Close message before the socket closed: {seen!r}"
    close = closes[-1]
    if isinstance(close, dict):
        assert close == {"type": 7, "error": GENERIC_CLOSE, "allowReconnect": True}
    else:
        assert close[:3] == [7, GENERIC_CLOSE, True], close


@pytest.mark.parametrize(
    "garbage",
    [
        "this is not json" + RS,
        '{"invocationId":"1","target":"Add","arguments":[]}' + RS,  # no type
        '{"type":1,"invocationId":"1","target":"Add","arguments":"nope"}' + RS,
        '{"type":"one"}' + RS,
        "[1,2,3]" + RS,
    ],
    ids=["not-json", "missing-type", "arguments-not-array", "type-not-int", "array"],
)
def test_garbage_json_frame_gets_close_with_error(server, garbage, after_check):
    with ws_connect(server) as c:
        assert c.handshake() == {}
        c.send_text(garbage)
        _assert_closed_with_error(c, c.wait_closed())


def test_garbage_messagepack_frame_gets_close_with_error(server, after_check):
    with ws_connect(server, protocol="messagepack") as c:
        assert c.handshake() == {}
        c.send_bytes(b"\x03\xc1\xc1\xc1")  # 0xc1 is never valid MessagePack
        _assert_closed_with_error(c, c.wait_closed())


def test_text_frame_on_messagepack_connection_gets_close(server, after_check):
    with ws_connect(server, protocol="messagepack") as c:
        assert c.handshake() == {}
        c.send_message([1, {}, "1", "Add", [1, 2]])
        msg = c.completion()
        assert msg[2] == "1" and msg[4] == 3
        c.send_text('{"type":1,"invocationId":"2","target":"Add","arguments":[1,2]}' + RS)
        _assert_closed_with_error(c, c.wait_closed())


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_oversized_message_gets_close_with_error(server, protocol, after_check):
    with ws_connect(server, protocol=protocol) as c:
        assert c.handshake() == {}
        c.invoke("Echo", "a" * (MAX_MESSAGE_SIZE // 2), invocation_id="ok")  # under the limit
        msg = c.completion()
        result = msg["result"] if protocol == "json" else msg[4]
        assert result == "a" * (MAX_MESSAGE_SIZE // 2)
        c.invoke("Echo", "b" * (MAX_MESSAGE_SIZE + 100), invocation_id="big")
        _assert_closed_with_error(c, c.wait_closed())


def test_oversized_handshake_is_refused(server, after_check):
    # the reference server cancels a handshake larger than the maximum message size
    with ws_connect(server) as c:
        pad = "x" * (MAX_MESSAGE_SIZE + 10)
        c.send_text('{"protocol":"json","version":1,"pad":"' + pad + '"}' + RS)
        assert c.read_handshake() == {"error": "Handshake was canceled."}
        c.wait_closed()


def test_messagepack_invocation_with_six_elements_and_headers(server, after_check):
    with ws_connect(server, protocol="messagepack") as c:
        assert c.handshake() == {}
        c.send_bytes(pack_frame([1, {"k": "v"}, "6", "Add", [2, 2], []]) + pack_frame([6]))
        msg = c.completion()
        assert msg[0] == 3 and msg[2] == "6" and msg[3] == 3 and msg[4] == 4


# --------------------------------------------------------------------------- detailed errors


def test_detailed_errors_add_exception_details(hubplane_server):
    server = hubplane_server(
        {HUB: "tests.e2e.hubs:E2EHub"}, extra_args=["--detailed-errors", "--log-level", "error"]
    )
    with ws_connect(server) as c:
        assert c.handshake() == {}
        c.invoke("FailOther", invocation_id="1")
        assert c.completion()["error"] == (
            "An unexpected error occurred invoking 'FailOther' on the server. "
            "ValueError: internal detail that must not reach clients"
        )
        c.invoke("FailHub", "same as without", invocation_id="2")
        assert c.completion()["error"] == (
            "An unexpected error occurred invoking 'FailHub' on the server. "
            "HubException: same as without"
        )
        c.invoke("Add", 1, invocation_id="3")
        assert c.completion()["error"] == (
            "Failed to invoke 'Add' due to an error on the server. "
            "InvalidDataException: Invocation provides 1 argument(s) but target expects 2."
        )
        c.send_text("garbage" + RS)
        closes = [m for m in c.wait_closed() if m.get("type") == 7]
        assert closes and closes[-1]["error"].startswith(GENERIC_CLOSE + " ")


# --------------------------------------------------------------------------- streams


def test_stream_cancel_invocation_ends_with_plain_completion(server, after_check):
    with ws_connect(server) as c:
        assert c.handshake() == {}
        c.send_message({"type": 4, "invocationId": "s", "target": "Endless", "arguments": [0.01]})
        first = c.next_message()
        assert first == {"type": 2, "invocationId": "s", "item": 0}
        c.send_message({"type": 5, "invocationId": "s"})
        while True:  # items already in flight may still arrive, then one Completion
            msg = c.next_message()
            if msg["type"] == 3:
                break
            assert msg["type"] == 2 and msg["invocationId"] == "s", msg
        # cancellation is not an error: an empty Completion, as the reference server sends
        assert msg == {"type": 3, "invocationId": "s"}
        c.send_message({"type": 5, "invocationId": "s"})  # cancel of a finished id: ignored
        c.send_message({"type": 5, "invocationId": "never-existed"})
        c.invoke("StreamEvents", invocation_id="ev")
        done = c.completion()
        assert done["invocationId"] == "ev" and "finally" in done["result"]


# --------------------------------------------------------------------------- lifecycle


def _events_for(watcher: RawClient, connection_id: str, kind: str, timeout: float) -> list:
    """Read the watcher's ``Events`` pushes until one of ``kind`` for ``connection_id``."""
    deadline = time.monotonic() + timeout
    found = []
    while time.monotonic() < deadline:
        try:
            msg = watcher.next_message(timeout=max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        if msg.get("target") == "Events" and msg["arguments"][1] == connection_id:
            found.append(msg["arguments"])
            if msg["arguments"][0] == kind:
                break
    return found


def _events_until_sync(watcher: RawClient, connection_id: str) -> list:
    """The ``Events`` for ``connection_id`` the watcher reads before the answer to a ``Sync``
    it calls now (the answer comes after whatever the server had pushed to it before)."""
    watcher.invoke("Sync", invocation_id="sync")
    found = []
    while True:
        msg = watcher.next_message(timeout=5)
        if msg.get("type") == 3 and msg.get("invocationId") == "sync":
            return found
        if msg.get("target") == "Events" and msg["arguments"][1] == connection_id:
            found.append(msg["arguments"])


@pytest.mark.parametrize("how", ["socket-dropped", "close-frame"])
def test_on_disconnected_runs_once_when_the_client_goes_away(http, server, how, after_check):
    with ws_connect(server, "watch=1") as watcher:
        assert watcher.handshake() == {}
        token = negotiate(http, 1).json()["connectionToken"]
        victim = ws_connect(server, f"id={token}")
        assert victim.handshake() == {}
        victim.invoke("GetConnectionId", invocation_id="id")
        victim_id = victim.completion()["result"]
        assert _events_for(watcher, victim_id, "connected", 5)[-1][0] == "connected"
        if how == "socket-dropped":  # no close frame, no Close message: a network failure
            victim.ws.socket.shutdown(2)
            victim.ws.socket.close()
        else:
            victim.close()
        events = _events_for(watcher, victim_id, "disconnected", 5)
        assert events and events[-1][0] == "disconnected", events
        # nothing more for this connection: on_disconnected ran once. The server is done with
        # the connection when its token is refused (409 until then), and whatever its end
        # pushed to the watcher comes before the answer to a call the watcher makes after.
        status = eventually(
            lambda: ws_status(server, f"id={token}"), lambda s: s != 409, 5.0, "the end"
        )
        assert status == 404
        assert _events_until_sync(watcher, victim_id) == []
        victim.close()


def test_negotiated_connection_expires_without_transport(hubplane_server):
    # a negotiated token that never connects is disposed after the disconnect timeout (404)
    server = hubplane_server(
        {HUB: "tests.e2e.hubs:E2EHub"},
        extra_args=["--disconnect-timeout", "1", "--max-pending-negotiations", "1"],
    )

    def negotiated(what: str) -> str:
        # Room for one negotiation waiting for its transport: negotiate answers 503 until the
        # one before has expired (the first waits for the readiness probe's negotiation).
        r = eventually(lambda: negotiate(http, 1), lambda r: r.status_code == 200, 10.0, what)
        return str(r.json()["connectionToken"])

    with httpx.Client(base_url=server.url, timeout=5.0, trust_env=False) as http:
        stale = negotiated("room for a negotiation")
        fresh_later = negotiated("the stale negotiation to expire")
    with pytest.raises(InvalidStatus) as info:
        ws_connect(server, f"id={stale}")
    assert info.value.response.status_code == 404
    with ws_connect(server, f"id={fresh_later}") as c:
        assert c.handshake() == {}
