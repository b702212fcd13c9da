"""Stateful reconnect on any node: a connection moves to whichever node its client reaches.

Two nodes on one Redis behind nginx round-robin (no affinity). An official JS client built
``withStatefulReconnect()`` joins a group that a client on the other node feeds with numbered
messages. When the node holding the stateful connection drains (SIGTERM), it stops listening
and drops the socket without a Close: the client's resume goes through nginx to the other
node, which takes the connection over (same connection id, same groups, on_connected not run
again) and delivers every number exactly once, in order.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.exceptions import InvalidStatus

from backplane.redis.keys import resume_key
from tests.e2e.balancer import Nginx
from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.raw import RS, RawClient
from tests.e2e.test_cluster import Puppet, Puppets, eventually, puppets, start_nodes, unique

pytestmark = pytest.mark.e2e
__all__ = ["puppets"]  # the fixture, used by name

TICK_MS = 20


@pytest.fixture(params=["no-sticky", "sticky"])
def pair(
    request: pytest.FixtureRequest, hubplane_server: Any, redis_server: Any, tmp_path: Path
) -> Iterator[tuple[Nginx, list[Any]]]:
    """Two nodes behind nginx: round-robin with signed tokens (``--token-secret``), or with
    session affinity and plain tokens."""
    prefix = f"handover-{uuid.uuid4().hex[:8]}:"
    extra = ["--drain-timeout", "10", "--disconnect-timeout", "10"]
    sticky = request.param == "sticky"
    if not sticky:
        extra += ["--token-secret", "s3cret"]
    nodes = start_nodes(hubplane_server, redis_server.url, 2, prefix, extra)
    balancer = Nginx(tmp_path, [n.port for n in nodes], sticky=sticky)
    try:
        yield balancer, nodes
    finally:
        balancer.stop()


def _numbers(puppet: Puppet) -> list[int]:
    return [int(args[1]) for args in puppet.messages("Receive") if args and args[0] == "group"]


def test_a_draining_node_hands_its_stateful_connection_to_the_other(
    pair: tuple[Nginx, list[Any]], puppets: Puppets
) -> None:
    balancer, nodes = pair
    group = unique("moving")
    url = f"http://127.0.0.1:{balancer.port}{HUB_PATH}"
    client = puppets.connect(url, groups=[group], stateful=True, reconnect=[0, 100, 500])
    holder = next(n for n in nodes if n.proc.pid == client.pid)
    other = next(n for n in nodes if n is not holder)
    puppets.connect(other.hub_url(HUB_PATH), name="sender")
    puppets.request(
        "tickStart",
        conn="sender",
        method="SendGroup",
        args=[group, "$seq"],
        intervalMs=TICK_MS,
    )
    eventually(lambda: len(_numbers(client)), lambda n: n >= 10, 10, "ticks before the drain")
    holder.stop(timeout=15)
    # The client goes on: the same connection, now served by the other node.
    who = eventually(
        lambda: client.invoke("Whoami"),
        lambda w: w["pid"] == other.proc.pid,
        10,
        "the connection served by the other node",
    )
    assert who["connectionId"] == client.id
    time.sleep(0.5)
    stopped = puppets.request("tickStop", conn="sender", settleMs=3000).value
    last = max(stopped["ok"])
    eventually(lambda: _numbers(client), lambda got: last in got, 10, "the last tick")
    got = _numbers(client)
    first = got[0]
    assert got == list(range(first, last + 1)), (
        f"lost {sorted(set(range(first, last + 1)) - set(got))}, "
        f"duplicated {sorted({n for n in got if got.count(n) > 1})}"
    )
    assert client.closes() == [] and client.reconnects() == []
    # on_connected ran once: the group was joined once, and the move kept it.
    assert client.invoke("Whoami")["connectionId"] == client.id


# -- a dropped socket, resumed on another node, with the raw protocol ------------------------


def _negotiate(node: Any, user: str) -> str:
    url = f"{node.hub_url(HUB_PATH)}/negotiate?negotiateVersion=1&useStatefulReconnect=true"
    request = urllib.request.Request(f"{url}&user={user}", data=b"", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        body = json.loads(response.read())
    assert body.get("useStatefulReconnect") is True, body
    return str(body["connectionToken"])


def _socket_url(node: Any, token: str, user: str) -> str:
    return node.ws_url(HUB_PATH, f"id={urllib.parse.quote(token)}&user={user}")


def _cut(client: RawClient) -> None:
    """Drop the socket with a reset, no close frame: a network failure."""
    sock = client.ws.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _receipts(client: RawClient, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len([m for m in got if m.get("target") == "Receive"]) < count:
        got.append(client.next_message(timeout=5))
    return got


def test_a_dropped_stateful_socket_resumes_on_another_live_node_for_its_user_only(
    hubplane_server: Any, redis_server: Any
) -> None:
    prefix = f"handover-{uuid.uuid4().hex[:8]}:"
    extra = ["--disconnect-timeout", "10", "--token-secret", "s3cret"]
    first, second = start_nodes(hubplane_server, redis_server.url, 2, prefix, extra)
    group = unique("blip")
    token = _negotiate(first, "alice")
    client = RawClient(_socket_url(first, token, "alice"))
    client.send_text(json.dumps({"protocol": "json", "version": 2}) + RS)
    assert client.read_handshake() == {}
    client.invoke("Join", group)
    assert client.completion()["invocationId"] == "1"
    with RawClient(second.ws_url(HUB_PATH, "user=sender")) as sender:
        sender.handshake()

        def send(n: int) -> None:
            sender.invoke("SendGroup", group, n, invocation_id=str(n))
            assert sender.completion()["invocationId"] == str(n)

        send(1)
        assert [m["arguments"] for m in _receipts(client, 1)] == [["group", 1]]
        _cut(client)
        for n in (2, 3):
            send(n)
        # Another user holding the token gets nothing.
        with pytest.raises(InvalidStatus) as refused:
            RawClient(_socket_url(second, token, "mallory"))
        assert refused.value.response.status_code == 403
        # Its own user resumes it on the other node, which takes it from the first.
        resumed = RawClient(_socket_url(second, token, "alice"))
        try:
            sequence = resumed.next_message()
            assert sequence["type"] == 9, sequence
            resumed.send_text(json.dumps({"type": 9, "sequenceId": 2}) + RS)
            send(4)
            got = _receipts(resumed, 4)
            numbers = [m["arguments"][1] for m in got if m.get("target") == "Receive"]
            assert numbers == [1, 2, 3, 4]
            # Numbered as the client expects: the replay starts where the Sequence said.
            assert sequence["sequenceId"] == 1 and got[0]["type"] == 3
            resumed.invoke("Whoami", invocation_id="w")
            who = resumed.completion()["result"]
            assert who["connectionId"] and who["pid"] == second.proc.pid
            assert who["user"] == "alice"
        finally:
            resumed.close()


def test_a_connection_the_server_ends_loses_its_resume_entry_before_its_close(
    hubplane_server: Any, redis_server: Any
) -> None:
    """No node may revive what the server ended: with --durable-resume the Close waits behind
    the deletion of the connection's resume entry."""
    prefix = f"handover-{uuid.uuid4().hex[:8]}:"
    extra = ["--token-secret", "s3cret", "--durable-resume"]
    (node,) = start_nodes(hubplane_server, redis_server.url, 1, prefix, extra)
    token = _negotiate(node, "alice")
    client = RawClient(_socket_url(node, token, "alice"))
    store = redis.Redis.from_url(redis_server.url)
    key = resume_key(prefix.encode(), token)
    try:
        client.send_text(json.dumps({"protocol": "json", "version": 2}) + RS)
        assert client.read_handshake() == {}
        client.invoke("Whoami", invocation_id="w")
        assert client.completion()["invocationId"] == "w"
        eventually(lambda: store.hget(key, "durable"), bool, 5, "the connection's record")
        client.invoke("Quit", invocation_id="q")
        close = client.next_message()
        # The moment the Close arrived (before the socket's own close), the entry was gone.
        gone = store.exists(key) == 0
        assert close.get("type") == 7, close
        assert gone
    finally:
        client.close()
        store.close()
