"""Stateful reconnect on any node: a connection moves to whichever node its client reaches.

Two nodes on one Redis behind nginx round-robin (no affinity). An official JS client built
``withStatefulReconnect()`` joins a group that a client on the other node feeds with numbered
messages. When the node holding the stateful connection drains (SIGTERM), it stops listening
and drops the socket without a Close: the client's resume goes through nginx to the other
node, which takes the connection over (same connection id, same groups, on_connected not run
again) and delivers every number exactly once, in order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.balancer import Nginx
from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.test_cluster import Puppet, Puppets, eventually, puppets, start_nodes, unique

pytestmark = pytest.mark.e2e
__all__ = ["puppets"]  # the fixture, used by name

TICK_MS = 20


@pytest.fixture
def pair(
    hubplane_server: Any, redis_server: Any, tmp_path: Path
) -> Iterator[tuple[Nginx, list[Any]]]:
    prefix = f"handover-{uuid.uuid4().hex[:8]}:"
    extra = ["--drain-timeout", "10", "--disconnect-timeout", "10", "--token-secret", "s3cret"]
    nodes = start_nodes(hubplane_server, redis_server.url, 2, prefix, extra)
    balancer = Nginx(tmp_path, [n.port for n in nodes])
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
