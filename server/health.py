"""Liveness, readiness and the backplane's state: for probes, metrics and the admin API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from backplane.redis.node import RedisNode

    from .admission import NodeAdmission
    from .lifecycle import Lifecycle
    from .nosticky import NoSticky

_NO_STORE = {"cache-control": "no-store"}


class Health:
    """``/healthz``, ``/readyz`` and the backplane status of one node."""

    def __init__(
        self,
        admission: NodeAdmission,
        lifecycle: Lifecycle,
        node: RedisNode | None,
        nosticky: NoSticky,
    ) -> None:
        self.admission = admission
        self.lifecycle = lifecycle
        self.node = node
        self.nosticky = nosticky

    def backplane_status(self) -> dict[str, Any]:
        """This node's backplane: Redis reachable or not, and its traffic counters.

        Readiness and metrics read this; the admin API serves it at ``/_hubplane/backplane``.
        """
        node = self.node
        if node is None:
            return {"mode": "memory", "connected": True}
        bus = node.bus
        stats = bus.stats
        forwarder = self.nosticky.forwarder
        return {
            "mode": "redis",
            "node": node.node_id,
            "connected": bus.connected,
            "last_error": bus.last_error,
            "published": stats.published,
            "received": stats.received,
            "buffered": stats.buffered,
            "dropped": stats.dropped,
            "queued": bus.queued,
            "reconnects": stats.reconnects,
            "round_trips": stats.batches,
            "errors": stats.errors,
            "purged_nodes": node.purged_nodes,
            "dead_nodes": dict(node.dead_nodes),
            "reregistrations": node.reregistrations,
            "duplicates_dropped": node.received.stats.duplicates,
            "gaps": node.received.stats.gaps,
            "forwarded": forwarder.forwarded if forwarder else 0,
            "forwards_served": forwarder.served if forwarder else 0,
        }

    def readiness(self) -> str | None:
        """Why this node should get no new clients now (``/readyz``), or None when it should."""
        if self.admission.draining:
            return "draining"
        if not self.lifecycle.started:
            return "starting"
        node = self.node
        if node is not None and not node.bus.connected:
            return "Redis unreachable"
        return None

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process serves (liveness)."""
        return PlainTextResponse("ok", headers=_NO_STORE)

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: 200 when ready for new clients, 503 with the reason otherwise."""
        reason = self.readiness()
        if reason is None:
            return PlainTextResponse("ready", headers=_NO_STORE)
        return PlainTextResponse(f"not ready: {reason}", status_code=503, headers=_NO_STORE)

    def routes(self) -> list[BaseRoute]:
        """The two probe routes."""
        return [
            Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
        ]
