"""The REST API's user groups on two nodes sharing one Redis, with official JS clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.rest_client import Rest, name
from tests.e2e.test_cluster import Puppet, Puppets, expect_delivery, start_nodes, unique
from tests.e2e.test_rest_api import REST_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def nodes(redis_server: Any, module_hubplane_server: Any) -> list[Any]:
    return start_nodes(module_hubplane_server, redis_server.url, 2, extra=REST_ARGS)


@pytest.fixture(scope="module")
def rest(nodes: list[Any]) -> Iterator[list[Rest]]:
    callers = [Rest(node.port) for node in nodes]
    try:
        yield callers
    finally:
        for caller in callers:
            caller.close()


@pytest.fixture
def puppets(node_client: Any) -> Iterator[Puppets]:
    pool = Puppets(node_client.node)
    try:
        yield pool
    finally:
        pool.close()


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
