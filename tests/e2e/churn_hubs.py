"""The hub of the churn harness (tests/e2e/churn.py), written only against the public API.

Every node serves ``ChurnHub`` at ``/hubs/churn``; its name on the backplane is
``tests.e2e.churn_hubs.ChurnHub``, which is what the harness' ``Emitter`` names when it
publishes the numbered ``Tick(seq)`` messages to the test's group. ``Publish(group, seq)`` is
the other publisher: a client of one node asks that node to send ``NodeTick(seq)`` to the group,
so the message leaves through the node's own outbox (buffered through a Redis outage).
"""

from __future__ import annotations

import os
from typing import Any

from backplane import Hub

#: The path every node of a churn cluster serves the hub at.
HUB_PATH = "/hubs/churn"
#: The hub's name on the backplane (module + qualified name, no ``wire_name`` set).
WIRE_NAME = "tests.e2e.churn_hubs.ChurnHub"


class ChurnHub(Hub):
    """Join a group, echo a number, publish a numbered tick, say which process serves the caller."""

    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def echo(self, n: Any) -> Any:
        return n

    async def publish(self, group: str, seq: int) -> None:
        """``NodeTick(seq)`` to ``group``: returns once the node took it (queued for Redis)."""
        await self.clients.group(group).send("NodeTick", seq)

    async def whoami(self) -> dict[str, Any]:
        """The caller's connection id and the pid of the node serving it."""
        return {"connectionId": self.context.connection_id, "pid": os.getpid()}
