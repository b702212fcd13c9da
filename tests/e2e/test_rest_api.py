"""The REST API (Azure SignalR Service's data plane) on two nodes sharing one Redis, called
with httpx and PyJWT as the published API says, reaching official JS clients on both nodes.

Sends go to node 0 and reach clients on either node; a REST broadcast from node 0 after the
call is the barrier that shows a message did *not* arrive (expect_delivery in test_cluster).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import msgpack
import pytest

from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.rest_client import KEY, Rest, msgpack_body, name, token
from tests.e2e.test_cluster import Puppet, Puppets, expect_delivery, puppets, start_nodes, unique

pytestmark = pytest.mark.e2e
__all__ = ["puppets"]  # the fixture, used by name

REST_ARGS = ["--rest-access-key", KEY, "--client-result-timeout", "2"]


@pytest.fixture(scope="module")
def nodes(redis_server: Any, module_hubplane_server: Any) -> list[Any]:
    """Two nodes with the REST API on the session Redis."""
    return start_nodes(module_hubplane_server, redis_server.url, 2, extra=REST_ARGS)


@pytest.fixture(scope="module")
def rest(nodes: list[Any]) -> Iterator[list[Rest]]:
    """A REST caller per node."""
    callers = [Rest(node.port) for node in nodes]
    try:
        yield callers
    finally:
        for caller in callers:
            caller.close()


class Four:
    """Four clients over two nodes: (node, protocol, user, in group g).

    a1: 0 json ann g; a2: 0 messagepack bob; b1: 1 messagepack ann g; b2: 1 json - g.
    """

    def __init__(self, pool: Puppets, nodes: list[Any]) -> None:
        self.g = unique("g")
        self.ann, self.bob = unique("ann"), unique("bob")
        url = [n.hub_url(HUB_PATH) for n in nodes]
        self.a1 = pool.connect(url[0], name="a1", user=self.ann, groups=[self.g])
        self.a2 = pool.connect(url[0], name="a2", user=self.bob, protocol="messagepack")
        self.b1 = pool.connect(
            url[1], name="b1", user=self.ann, groups=[self.g], protocol="messagepack"
        )
        self.b2 = pool.connect(url[1], name="b2", groups=[self.g])
        self.all = [self.a1, self.a2, self.b1, self.b2]


@pytest.fixture
def four(nodes: list[Any], puppets: Puppets) -> Four:
    return Four(puppets, nodes)


def nothing_arrived(rest: Rest, clients: list[Puppet]) -> None:
    """Every client has seen a barrier published after the calls, and nothing else."""
    mark = unique("barrier")
    rest.barrier(mark)
    for p in clients:
        p.wait_for("barrier", mark)
        assert [m for m in p.messages() if m[0] != "barrier"] == [], (p, p.messages())


# --------------------------------------------------------------------------- auth, versions


def test_health_needs_no_token(rest: list[Rest]) -> None:
    for method in ("HEAD", "GET"):
        assert rest[0].http.request(method, "/api/health").status_code == 200
    assert rest[0].http.request("POST", "/api/health").status_code == 405


def test_auth_failures_are_401_with_a_reason(rest: list[Rest]) -> None:
    r = rest[0]
    url = f"http://127.0.0.1{r.path(':send')}?api-version=2022-06-01"
    other = f"http://127.0.0.1{r.path('groups/x/:send')}"
    cases = {
        "": "bearer token is required",
        "Basic abc": "bearer token is required",
        "Bearer not-a-jwt": "not a JWT",
        "Bearer " + token(url, key="another-key-of-32-characters-or-more"): "signature",
        "Bearer " + token(url, ttl=-120): "expired",
        "Bearer " + token(other): "audience",
        "Bearer " + token(url, nbf=int(time.time()) + 600): "not valid yet",
    }
    no_exp = jwt.encode({"aud": url}, KEY, algorithm="HS256")
    cases["Bearer " + no_exp] = "no exp"
    unsigned = jwt.encode({"aud": url, "exp": time.time() + 60}, None, algorithm="none")
    cases["Bearer " + unsigned] = "HS256"
    for auth, reason in cases.items():
        response = r.request("POST", ":send", body={"target": "Receive"}, auth=auth)
        assert response.status_code == 401, (auth, response.text)
        assert reason in response.json()["error"], (auth, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_audience_ignores_port_and_query_and_names_can_differ_in_case(rest: list[Rest]) -> None:
    r = rest[0]
    path = r.path(":send")
    for aud in (
        f"http://127.0.0.1:{r.port}{path}",
        f"HTTP://127.0.0.1{path}?api-version=2022-06-01&x=1",
        [f"http://elsewhere{path}", f"http://127.0.0.1{path}"],
    ):
        response = r.http.post(
            path + "?api-version=2022-06-01",
            json={"target": "Receive", "arguments": ["aud", unique("x")]},
            headers={
                "authorization": "Bearer "
                + jwt.encode({"aud": aud, "exp": time.time() + 60}, KEY, algorithm="HS256")
            },
        )
        assert response.status_code == 202, (aud, response.text)
    upper = r.http.post(
        "/api/hubs/CLUSTER/:send?api-version=2024-12-01",
        json={"target": "Receive", "arguments": ["case", unique("x")]},
        headers={"authorization": "Bearer " + token("http://127.0.0.1/api/hubs/CLUSTER/:send")},
    )
    assert upper.status_code == 202, upper.text


def test_forwarded_host_counts_only_from_trusted_proxies(hubplane_server: Any) -> None:
    hubs = {HUB_PATH: "tests.e2e.cluster_hubs:ClusterHub"}
    trusted = hubplane_server(
        hubs, extra_args=["--rest-access-key", KEY, "--rest-trusted-proxies", "127.0.0.0/8"]
    )
    plain = hubplane_server(hubs, extra_args=["--rest-access-key", KEY])
    path = "/api/hubs/cluster/:send?api-version=2022-06-01"
    headers = {
        "authorization": "Bearer " + token("https://public.example.com/api/hubs/cluster/:send"),
        "x-forwarded-host": "public.example.com",
        "x-forwarded-proto": "https",
    }
    body = {"target": "Receive", "arguments": []}
    for server, expected in ((trusted, 202), (plain, 401)):
        with httpx.Client(base_url=server.url, trust_env=False) as http:
            assert http.post(path, json=body, headers=headers).status_code == expected


def test_api_version_and_paths(rest: list[Rest]) -> None:
    r = rest[0]
    body = {"target": "Receive", "arguments": []}
    missing = r.request("POST", ":send", version=None, body=body)
    assert missing.status_code == 400 and "api-version is required" in missing.json()["error"]
    unknown = r.request("POST", ":send", version="2019-01-01", body=body)
    assert unknown.status_code == 400 and "unsupported api-version" in unknown.json()["error"]
    assert r.request("POST", ":send", version="2024-12-01", body=body).status_code == 202
    old = r.request("GET", "groups/g/connections", version="2022-06-01")
    assert old.status_code == 400 and "2024-12-01" in old.json()["error"]
    nohub = Rest(r.port, hub="nohub")
    try:
        gone = nohub.request("POST", ":send", body=body)
        assert gone.status_code == 404 and "no hub" in gone.json()["error"]
    finally:
        nohub.close()
    assert r.request("POST", "nowhere/:send", body=body).status_code == 404
    wrong = r.request("PATCH", ":send", body=body)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert r.request("POST", "users//:send", body=body).status_code == 400


# --------------------------------------------------------------------------- sends


@pytest.mark.parametrize("body", ["json", "messagepack"])
def test_sends_reach_exactly_their_clients_on_both_nodes(
    four: Four, rest: list[Rest], body: str
) -> None:
    r = rest[0]
    m = four

    def send(path: str, kind: str, params: list[tuple[str, str]] | None = None) -> str:
        payload = unique(kind)
        if body == "json":
            r.send(path, "Receive", kind, payload, params=params)
        else:
            content = msgpack_body("Receive", [kind, payload])
            response = r.request(
                "POST",
                path,
                content=content,
                content_type="application/octet-stream",
                params=params,
            )
            assert response.status_code == 202, response.text
        return payload

    cases = [
        (":send", "all", None, [m.a1, m.a2, m.b1, m.b2]),
        (":send", "all-except", [("excluded", m.a2.id), ("excluded", m.b1.id)], [m.a1, m.b2]),
        (f"users/{name(m.ann)}/:send", "user", None, [m.a1, m.b1]),
        (f"groups/{name(m.g)}/:send", "group", None, [m.a1, m.b1, m.b2]),
        (f"groups/{name(m.g)}/:send", "group-except", [("excluded", m.b2.id)], [m.a1, m.b1]),
        (f"connections/{name(m.b1.id)}/:send", "connection", None, [m.b1]),
    ]
    for path, kind, params, expected in cases:
        payload = send(path, kind, params)
        expect_delivery(kind, payload, expected, m.all, r.barrier)


def test_sends_from_the_other_node_and_only_one_protocol(four: Four, rest: list[Rest]) -> None:
    # Only JSON bytes in the binary body: MessagePack clients get the message re-encoded.
    payload = unique("json-only")
    response = rest[1].request(
        "POST",
        ":send",
        content=msgpack_body("Receive", ["json-only", payload], protocols=("json",)),
        content_type="application/octet-stream",
    )
    assert response.status_code == 202, response.text
    for p in four.all:
        p.wait_for("json-only", payload)
    # Missing or null arguments are [].
    for body in ({"target": "Receive"}, {"TARGET": "Receive", "arguments": None}):
        assert (
            rest[1].request("POST", f"connections/{four.a2.id}/:send", body=body).status_code == 202
        )
    assert four.a2.pool.wait_until(lambda: four.a2.messages().count([]) == 2, 5)


def test_bad_bodies_and_limits_send_nothing(four: Four, rest: list[Rest]) -> None:
    r = rest[0]
    octet = "application/octet-stream"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"{", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"content": b"", "content_type": "application/json"}, 400, "empty"),
        ({"body": ["Receive"]}, 400, "JSON object"),
        ({"body": {"arguments": [1]}}, 400, "target"),
        ({"body": {"target": 7}}, 400, "target"),
        ({"body": {"target": "Receive", "arguments": {"a": 1}}}, 400, "array"),
        ({"content": b"x", "content_type": "text/plain"}, 415, "content type"),
        ({"content": b"\xc1", "content_type": octet}, 400, "MessagePack"),
        ({"content": b"\x81\xa4json\xa1x", "content_type": octet}, 400, "framed bytes"),
        ({"content": b"\x81\xa4json\xc4\x02{\x1e", "content_type": octet}, 400, "json payload"),
        ({"content": b"\x81\xaablazorpack\xc4\x01\x00", "content_type": octet}, 400, "no payload"),
        (
            {"content": b"\x80", "content_type": octet},
            400,
            "MessagePack map",
        ),
        ({"body": {"target": "Receive", "arguments": ["x" * (1024 * 1024)]}}, 413, "exceeds"),
    ]
    for kwargs, status, reason in cases:
        response = r.request("POST", ":send", **kwargs)
        assert response.status_code == status, (kwargs.get("content", b"")[:40], response.text)
        assert reason in response.json()["error"], (reason, response.text)
    # An invocation with an id would ask the clients for a result nobody awaits.
    with_id = msgpack.packb(
        {"json": b'{"type":1,"invocationId":"1","target":"Receive","arguments":[]}\x1e'}
    )
    response = r.request("POST", ":send", content=with_id, content_type=octet)
    assert response.status_code == 400 and "without an id" in response.json()["error"]
    big_headers = {f"x-filler-{i}": "y" * 1000 for i in range(20)}
    response = r.request("POST", ":send", body={"target": "Receive"}, headers=big_headers)
    assert response.status_code == 431
    nothing_arrived(r, four.all)


# --------------------------------------------------------------------------- checks, groups


def test_head_checks_see_the_whole_cluster(four: Four, rest: list[Rest]) -> None:
    r = rest[0]
    assert r.request("HEAD", f"connections/{four.b2.id}").status_code == 200
    assert r.request("HEAD", "connections/nobody").status_code == 404
    assert r.request("HEAD", f"users/{name(four.bob)}").status_code == 200
    assert r.request("HEAD", f"users/{unique('nobody')}").status_code == 404
    assert r.request("HEAD", f"groups/{name(four.g)}").status_code == 200
    assert r.request("HEAD", f"groups/{unique('empty')}").status_code == 404


def test_group_membership_of_connections_on_another_node(four: Four, rest: list[Rest]) -> None:
    r = rest[0]
    room = unique("room")
    for p in (four.a2, four.b2):
        assert r.request("PUT", f"groups/{name(room)}/connections/{p.id}").status_code == 200
    payload = unique("room")
    r.send(f"groups/{name(room)}/:send", "Receive", "room", payload)
    expect_delivery("room", payload, [four.a2, four.b2], four.all, r.barrier)
    assert r.request("DELETE", f"groups/{name(room)}/connections/{four.b2.id}").status_code == 200
    payload = unique("room")
    r.send(f"groups/{name(room)}/:send", "Receive", "room", payload)
    expect_delivery("room", payload, [four.a2], four.all, r.barrier)
    missing = r.request("PUT", f"groups/{name(room)}/connections/nobody")
    assert missing.status_code == 404 and "nobody" in missing.json()["error"]
    assert r.request("DELETE", f"groups/{name(room)}/connections/nobody").status_code == 404
    # Out of every group: b1 was in g (from its query) and joins room first.
    assert r.request("PUT", f"groups/{name(room)}/connections/{four.b1.id}").status_code == 200
    assert r.request("DELETE", f"connections/{four.b1.id}/groups").status_code == 200
    assert r.request("DELETE", "connections/nobody/groups").status_code == 200
    for group, kind in ((room, "room"), (four.g, "g")):
        payload = unique(kind)
        r.send(f"groups/{name(group)}/:send", "Receive", kind, payload)
        expected = [four.a2] if group == room else [four.a1, four.b2]
        expect_delivery(kind, payload, expected, four.all, r.barrier)


# --------------------------------------------------------------------------- closing


def test_close_a_connection_with_a_reason(four: Four, rest: list[Rest]) -> None:
    r = rest[0]
    response = r.request("DELETE", f"connections/{four.b2.id}", params={"reason": "bye now"})
    assert response.status_code == 200
    event = four.b2.wait_closed()
    assert event["error"] and "bye now" in event["error"], event
    assert r.request("DELETE", "connections/nobody").status_code == 200
    assert r.request("HEAD", f"connections/{four.b2.id}").status_code in (200, 404)
    nothing_arrived(r, [four.a1, four.a2, four.b1])


def test_close_connections_of_a_group_a_user_and_the_hub(
    nodes: list[Any], puppets: Puppets, rest: list[Rest]
) -> None:
    r = rest[0]
    url = [n.hub_url(HUB_PATH) for n in nodes]
    g, ann = unique("g"), unique("ann")
    # reconnect on: a Close without allowReconnect must still end them for good
    c = [
        puppets.connect(
            url[i % 2],
            name=f"c{i}",
            user=ann if i < 2 else None,
            groups=[g] if i >= 2 else [],
            reconnect=True,
        )
        for i in range(5)
    ]
    response = r.request(
        "POST",
        f"groups/{name(g)}/:closeConnections",
        params=[("excluded", c[4].id), ("reason", "group")],
    )
    assert response.status_code == 204
    for p in (c[2], c[3]):
        assert "group" in (p.wait_closed()["error"] or "")
    response = r.request("POST", f"users/{name(ann)}/:closeConnections", params={"reason": "user"})
    assert response.status_code == 204
    for p in (c[0], c[1]):
        assert "user" in (p.wait_closed()["error"] or "")
    survivor = puppets.connect(url[1], name="survivor")
    response = r.request(
        "POST", ":closeConnections", params=[("excluded", survivor.id), ("reason", "all")]
    )
    assert response.status_code == 204
    assert "all" in (c[4].wait_closed()["error"] or "")
    nothing_arrived(r, [survivor])
    assert all(p.reconnects() == [] for p in c)


# --------------------------------------------------------------------------- legacy


def test_legacy_v1_paths(four: Four, rest: list[Rest]) -> None:
    r = rest[0]

    def legacy(method: str, path: str, **kw: Any) -> int:
        return r.request(method, path, legacy=True, **kw).status_code

    cases = [
        ("", "v1-all", [four.a1, four.a2, four.b1, four.b2]),
        (f"users/{name(four.ann)}", "v1-user", [four.a1, four.b1]),
        (f"groups/{name(four.g)}", "v1-group", [four.a1, four.b1, four.b2]),
        (f"connections/{four.b2.id}", "v1-connection", [four.b2]),
    ]
    for path, kind, expected in cases:
        payload = unique(kind)
        assert legacy("POST", path, body={"target": "Receive", "arguments": [kind, payload]}) == 202
        expect_delivery(kind, payload, expected, four.all, r.barrier)
    assert legacy("GET", f"connections/{four.a1.id}") == 200
    assert legacy("HEAD", f"users/{name(four.ann)}") == 200
    assert legacy("GET", f"groups/{name(four.g)}") == 200
    assert legacy("GET", "connections/nobody") == 404
    assert legacy("GET", f"users/{unique('u')}") == 404
    assert legacy("GET", f"groups/{unique('g')}") == 404
