"""The REST API's user groups, group listing and ``:invoke`` on two nodes sharing one Redis,
with official JS clients (and a raw one that never answers) connected to both."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.raw import RawClient
from tests.e2e.rest_client import Rest, name, token
from tests.e2e.test_cluster import Puppet, Puppets, expect_delivery, unique
from tests.e2e.test_rest_api import nodes, puppets, rest

pytestmark = pytest.mark.e2e
__all__ = ["nodes", "puppets", "rest"]  # the fixtures, used by name (one set per module)


def group_gets(r: Rest, group: str, expected: list[Puppet], everyone: list[Puppet]) -> None:
    """A send to ``group`` reaches exactly ``expected``."""
    payload = unique("ug")
    r.send(f"groups/{name(group)}/:send", "Receive", group, payload)
    expect_delivery(group, payload, expected, everyone, r.barrier)


def test_user_groups_follow_the_user_to_later_connections_on_any_node(
    nodes: list[Any], puppets: Puppets, rest: list[Rest]
) -> None:
    r0, r1 = rest
    url = [n.hub_url(HUB_PATH) for n in nodes]
    ann, bob = unique("ann"), unique("bob")
    forever, now_only, brief = unique("forever"), unique("now"), unique("brief")
    a0 = puppets.connect(url[0], name="a0", user=ann)
    a1 = puppets.connect(url[1], name="a1", user=ann, protocol="messagepack")
    b0 = puppets.connect(url[0], name="b0", user=bob)
    users = f"users/{name(ann)}/groups"
    assert r0.request("PUT", f"{users}/{name(forever)}").status_code == 200
    assert r0.request("PUT", f"{users}/{name(now_only)}", params={"ttl": "0"}).status_code == 200
    assert r1.request("PUT", f"{users}/{name(brief)}", params={"ttl": "2"}).status_code == 200
    everyone = [a0, a1, b0]
    for group in (forever, now_only, brief):
        group_gets(r0, group, [a0, a1], everyone)
    # A later connection, on either node, joins the groups with a live record.
    a2 = puppets.connect(url[1], name="a2", user=ann)
    a3 = puppets.connect(url[0], name="a3", user=ann, protocol="messagepack")
    everyone += [a2, a3]
    group_gets(r0, forever, [a0, a1, a2, a3], everyone)
    group_gets(r0, now_only, [a0, a1], everyone)
    group_gets(r1, brief, [a0, a1, a2, a3], everyone)
    assert r0.request("HEAD", f"{users}/{name(forever)}").status_code == 200
    assert r0.request("HEAD", f"{users}/{name(now_only)}").status_code == 200  # by connection
    assert r0.request("HEAD", f"users/{name(bob)}/groups/{name(forever)}").status_code == 404
    # After the ttl, new connections no longer join (those that did stay).
    time.sleep(2.2)
    a4 = puppets.connect(url[1], name="a4", user=ann)
    everyone.append(a4)
    group_gets(r0, brief, [a0, a1, a2, a3], everyone)
    group_gets(r0, forever, [a0, a1, a2, a3, a4], everyone)
    # Removal: 204, the user's connections leave, later ones do not join.
    assert r1.request("DELETE", f"{users}/{name(forever)}").status_code == 204
    assert r0.request("HEAD", f"{users}/{name(forever)}").status_code == 404
    a5 = puppets.connect(url[0], name="a5", user=ann)
    everyone.append(a5)
    group_gets(r0, forever, [], everyone)
    assert r0.request("DELETE", users).status_code == 204
    group_gets(r0, now_only, [], everyone)
    group_gets(r0, brief, [], everyone)
    assert r0.request("PUT", f"{users}/x", params={"ttl": "soon"}).status_code == 400


def test_listing_a_group_spread_over_two_nodes_page_by_page(
    nodes: list[Any], puppets: Puppets, rest: list[Rest]
) -> None:
    url = [n.hub_url(HUB_PATH) for n in nodes]
    g = unique("g")
    clients = [
        puppets.connect(url[i % 2], name=f"m{i}", user=f"user{i}" if i % 3 else None, groups=[g])
        for i in range(5)
    ]
    r = rest[0]
    response = r.request(
        "GET", f"groups/{name(g)}/connections", version="2024-12-01", params={"maxpagesize": "2"}
    )
    seen: list[dict[str, Any]] = []
    pages = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{nodes[1].port}", trust_env=False) as other:
        while True:
            assert response.status_code == 200, response.text
            page = response.json()
            assert 1 <= len(page["value"]) <= 2
            seen.extend(page["value"])
            pages += 1
            link = page["nextLink"]
            if not link:
                break
            # Follow the link on the other node, with a token for its path.
            auth = "Bearer " + token("http://127.0.0.1" + httpx.URL(link).path)
            response = other.get(link, headers={"authorization": auth})
    assert pages == 3
    assert sorted(v["connectionId"] for v in seen) == sorted(p.id for p in clients)
    assert {v["connectionId"]: v["userId"] for v in seen} == {p.id: p.user for p in clients}
    empty = r.request("GET", f"groups/{unique('none')}/connections", version="2024-12-01")
    assert empty.json() == {"value": [], "nextLink": None}
    old = r.request("GET", f"groups/{name(g)}/connections", version="2022-06-01")
    assert old.status_code == 400 and "2024-12-01" in old.json()["error"]


def test_invoke_a_client_on_the_other_node(
    nodes: list[Any], puppets: Puppets, rest: list[Rest]
) -> None:
    answers = {"Compute": {"answer": 42}, "Fail": {"$error": "boom"}}
    client = puppets.connect(nodes[1].hub_url(HUB_PATH), name="asked", answers=answers)
    r = rest[0]
    path = f"connections/{client.id}/:invoke"

    def invoke(target: str, rest_path: str = path) -> httpx.Response:
        body = {"Target": target, "Arguments": [1, "x"]}
        return r.request("POST", rest_path, version="2024-12-01", body=body)

    ok = invoke("Compute")
    assert (ok.status_code, ok.json()) == (200, {"answer": 42})
    failed = invoke("Fail")
    assert failed.status_code == 400 and "boom" in failed.json()["error"]
    assert invoke("Compute", "connections/nobody/:invoke").status_code == 404
    with RawClient(nodes[1].ws_url(HUB_PATH)) as silent:
        silent.handshake()
        silent.invoke("Whoami")
        silent_id = silent.completion()["result"]["connectionId"]
        started = time.monotonic()
        late = invoke("Compute", f"connections/{silent_id}/:invoke")
        assert late.status_code == 504, late.text
        assert 1.5 < time.monotonic() - started < 6
    old = r.request("POST", path, version="2022-06-01", body={"target": "Compute"})
    assert old.status_code == 400
