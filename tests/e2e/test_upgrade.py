"""A rolling upgrade: a node of the previous release beside one of this release, one Redis.

This release adds to what goes over Redis (sequence numbers after the origin, a channel per
node, resume entries, node calls); a node of the previous release must keep working beside it:
messages flow both ways, exactly once, and neither node purges the other. The previous release
is the source tree of the last commit before those changes, taken from git history.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.cluster_hubs import HUB_PATH
from tests.e2e.test_cluster import HUBS, Puppets, eventually, node_args, puppets, unique

pytestmark = pytest.mark.e2e
__all__ = ["puppets"]  # the fixture, used by name
ADMIN = "upgrade-admin"

#: The last commit of the previous release (before exactly-once numbering and handovers).
PREVIOUS_RELEASE = "0d68883"


def previous_release(tmp_path: Path) -> Path:
    """The previous release's source tree, extracted from git into ``tmp_path``."""
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", PREVIOUS_RELEASE],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(
            f"the previous release {PREVIOUS_RELEASE} is not in this clone's history: {exc}"
        )
    root = tmp_path / "previous"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


def test_a_node_of_the_previous_release_works_beside_this_one(
    hubplane_server: Any, redis_server: Any, puppets: Puppets, tmp_path: Path
) -> None:
    prefix = unique("upgrade") + ":"
    args = node_args(redis_server.url, prefix, ["--admin-token", ADMIN])
    old = hubplane_server(HUBS, extra_args=args, root=previous_release(tmp_path))
    new = hubplane_server(HUBS, extra_args=args)
    group = unique("mixed")
    a = puppets.connect(old.hub_url(HUB_PATH), groups=[group], name="on-old")
    b = puppets.connect(new.hub_url(HUB_PATH), groups=[group], name="on-new")
    a.invoke("SendGroup", group, "from-old")
    b.invoke("SendGroup", group, "from-new")
    for client in (a, b):
        for payload in ("from-old", "from-new"):
            client.wait_for("group", payload)
    # Longer than the presence timeout (2 s): neither node takes the other for dead.
    time.sleep(3.0)
    for client in (a, b):
        assert client.count("group", "from-old") == 1
        assert client.count("group", "from-new") == 1
        assert client.state() == "Connected" and client.closes() == []
    a.invoke("SendGroup", group, "later")
    b.wait_for("group", "later")
    for client in (a, b):
        who = client.invoke("Whoami")
        assert who["connectionId"] == client.id
    present = eventually(
        lambda: _nodes(new),
        lambda nodes: len(nodes) == 2,
        5,
        "both nodes in presence",
    )
    assert len(present) == 2
    # The old node really is the previous release: it knows nothing of duplicates.
    assert "duplicates_dropped" not in _admin(old, "backplane")
    assert "duplicates_dropped" in _admin(new, "backplane")


def _admin(server: Any, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/_hubplane/{path}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _nodes(server: Any) -> list[Any]:
    return list(_admin(server, f"nodes?hub={HUB_PATH}")["nodes"])
