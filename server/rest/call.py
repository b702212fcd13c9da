"""One routed REST call as its handler sees it: the request, the hub, the path's names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .request import Reply, RestRequest

if TYPE_CHECKING:
    from backplane import HubContext
    from backplane.lifetime.base import HubLifetimeManager
    from backplane.presence import Presence

# The answers without a body.
OK = Reply(200)
ACCEPTED = Reply(202)
NO_CONTENT = Reply(204)
NOT_FOUND = Reply(404)


class Call:
    """A request routed to a hub: ``params`` holds ``user``, ``group``, ``connection``."""

    __slots__ = ("request", "hub", "params", "version")

    def __init__(
        self,
        request: RestRequest,
        hub: HubContext[Any],
        params: dict[str, str],
        version: str | None,
    ) -> None:
        self.request = request
        self.hub = hub
        self.params = params
        #: The ``api-version`` (None on the legacy ``/api/v1`` paths).
        self.version = version

    @property
    def lifetime(self) -> HubLifetimeManager:
        """The hub's lifetime manager (reaches clients on every node)."""
        return self.hub.lifetime

    @property
    def presence(self) -> Presence:
        """Who is connected to the hub, cluster-wide."""
        return self.hub.presence

    def excluded(self) -> frozenset[str] | None:
        """The connection ids of ``?excluded=`` (repeatable), or None."""
        ids = self.request.query_all("excluded")
        return frozenset(ids) if ids else None

    def reason(self) -> str | None:
        """The ``?reason=`` of a close (None when absent or empty)."""
        return self.request.query("reason") or None


def found(exists: bool) -> Reply:
    """200 when it exists, else 404 (the answer of a HEAD check)."""
    return OK if exists else NOT_FOUND
