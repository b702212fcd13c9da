"""The read-only admin API under ``/_hubplane/``: hubs, nodes, connections, groups, users.

It exists only when ``--admin-token`` is set, and every request must carry
``Authorization: Bearer <token>``. Answers come from each hub's presence API, so with the
Redis backplane they cover the whole cluster, not just the node that answers.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from backplane.presence import Presence

from .httputil import json_response, normalize_path, query_value

if TYPE_CHECKING:
    from backplane import HubContext

    from .hubs import HubEndpoint
    from .nodestats import NodeStats
    from .settings import Settings

logger = logging.getLogger("hubplane.admin")

PREFIX = "/_hubplane"

_NO_STORE = {"cache-control": "no-store"}
# Connection ids per page of /_hubplane/connections: by default, and at most.
PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10000


class AdminSource(Protocol):
    """What the admin API reads of the app (``Hubplane`` is one)."""

    @property
    def settings(self) -> Settings:
        """The app's settings (the admin token)."""
        ...

    @property
    def endpoints(self) -> Mapping[str, HubEndpoint]:
        """Every hub by path."""
        ...

    def hub_context(self, hub: str) -> HubContext:
        """The ``HubContext`` of the hub at a path."""
        ...

    def backplane_status(self) -> dict[str, Any]:
        """This node's Redis state and counters."""
        ...

    @property
    def node_stats(self) -> NodeStats | None:
        """This node's figures and the cluster's (set whenever the admin API is on)."""
        ...


class AdminError(Exception):
    """A request the admin API answers with an error status and a JSON body."""

    def __init__(self, status_code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body: dict[str, Any] = {"error": message, **extra}


Handler = Callable[[Request], Awaitable[Any]]


class AdminApi:
    """The endpoints; each returns a JSON-able value or raises ``AdminError``."""

    def __init__(self, hubplane: AdminSource) -> None:
        self.hubplane = hubplane

    def authorized(self, request: Request) -> bool:
        """True when the request carries the admin bearer token."""
        token = self.hubplane.settings.admin_token
        if not token:
            return False
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), token.encode())

    def wrap(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Authentication, errors and JSON around one endpoint."""

        async def endpoint(request: Request) -> Response:
            if not self.authorized(request):
                response = json_response({"error": "a valid admin bearer token is required"}, 401)
                response.headers["www-authenticate"] = 'Bearer realm="hubplane"'
                response.headers.update(_NO_STORE)
                return response
            try:
                body = await handler(request)
                status = 200
            except AdminError as exc:
                body, status = exc.body, exc.status_code
            except Exception:
                # e.g. Redis unreachable: the caller gets an answer, the node keeps serving
                logger.exception("admin request %s failed", request.url.path)
                body, status = {"error": "presence is unavailable, see the server log"}, 503
            response = json_response(body, status)
            response.headers.update(_NO_STORE)
            return response

        return endpoint

    def hub(self, request: Request) -> tuple[str, Presence]:
        """The hub named by ``?hub=`` (optional when only one hub is served) and its presence."""
        endpoints = self.hubplane.endpoints
        name = query_value(request, "hub")
        if name is None:
            if len(endpoints) != 1:
                raise AdminError(
                    400, "several hubs are served: choose one with ?hub=", hubs=list(endpoints)
                )
            path = next(iter(endpoints))
        else:
            path = normalize_path(name)
            if path not in endpoints:
                raise AdminError(404, f"no hub is served at {path!r}", hubs=list(endpoints))
        presence: Presence = self.hubplane.hub_context(path).presence
        return path, presence

    async def hubs(self, request: Request) -> Any:
        """``GET /_hubplane/hubs``: every hub path and its connection count."""
        hubs = []
        for path in self.hubplane.endpoints:
            presence: Presence = self.hubplane.hub_context(path).presence
            hubs.append({"path": path, "connections": await presence.count_connections()})
        return {"hubs": hubs}

    async def nodes(self, request: Request) -> Any:
        """``GET /_hubplane/nodes``: the live nodes serving a hub."""
        path, presence = self.hub(request)
        return {"hub": path, "nodes": await presence.nodes()}

    async def connections(self, request: Request) -> Any:
        """``GET /_hubplane/connections?limit=&cursor=``: a page of a hub's connection ids.

        Ids in order, at most ``limit`` (default and most: ``PAGE_SIZE``, ``MAX_PAGE_SIZE``),
        after ``cursor``; ``next`` is the cursor of the next page (null on the last), ``count``
        the hub's connections in all.
        """
        path, presence = self.hub(request)
        limit = PAGE_SIZE
        raw = query_value(request, "limit")
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
                raise AdminError(400, f"limit must be a number from 1 to {MAX_PAGE_SIZE}")
            limit = int(raw)
        cursor = query_value(request, "cursor") or None
        ids, more = await presence.connections_page(cursor, limit)
        return {
            "hub": path,
            "count": await presence.count_connections(),
            "connections": ids,
            "next": ids[-1] if more and ids else None,
        }

    async def group(self, request: Request) -> Any:
        """``GET /_hubplane/groups/{group}``: the connections in a group."""
        path, presence = self.hub(request)
        group = request.path_params["group"]
        return {
            "hub": path,
            "group": group,
            "connections": sorted(await presence.group_members(group)),
        }

    async def user(self, request: Request) -> Any:
        """``GET /_hubplane/users/{user}``: whether a user is online, and where."""
        path, presence = self.hub(request)
        user = request.path_params["user"]
        ids = sorted(await presence.user_connections(user))
        return {"hub": path, "user": user, "online": bool(ids), "connections": ids}

    async def groups_of(self, request: Request) -> Any:
        """``GET /_hubplane/connections/{id}/groups``: the groups of one connection."""
        path, presence = self.hub(request)
        connection_id = request.path_params["connection_id"]
        groups = sorted(await presence.groups_of(connection_id))
        return {"hub": path, "connection": connection_id, "groups": groups}

    async def backplane(self, request: Request) -> Any:
        """``GET /_hubplane/backplane``: this node's Redis state and counters."""
        return self.hubplane.backplane_status()

    def _stats(self) -> NodeStats:
        stats = self.hubplane.node_stats
        if stats is None:
            raise AdminError(404, "no figures are kept on this node")
        return stats

    async def stats(self, request: Request) -> Any:
        """``GET /_hubplane/stats``: this node's connections by transport and protocol,
        messages and rates, largest local groups, backplane."""
        return self._stats().snapshot()

    async def cluster(self, request: Request) -> Any:
        """``GET /_hubplane/cluster``: the figures of every live node, and the hubs' totals."""
        return await self._stats().cluster()

    async def not_found(self, request: Request) -> Any:
        """Any other path under the prefix (after authentication, so it reveals nothing)."""
        raise AdminError(404, "no such admin endpoint")


def admin_routes(hubplane: AdminSource) -> list[BaseRoute]:
    """The admin API's routes (add them only when ``settings.admin_token`` is set)."""
    api = AdminApi(hubplane)
    table: list[tuple[str, Handler]] = [
        ("/hubs", api.hubs),
        ("/backplane", api.backplane),
        ("/stats", api.stats),
        ("/cluster", api.cluster),
        ("/nodes", api.nodes),
        ("/connections", api.connections),
        # group and user names may hold any character, '/' included (sent as %2F)
        ("/groups/{group:path}", api.group),
        ("/users/{user:path}", api.user),
        ("/connections/{connection_id}/groups", api.groups_of),
    ]
    routes: list[BaseRoute] = [
        Route(PREFIX + path, api.wrap(handler), methods=["GET"]) for path, handler in table
    ]
    routes.append(Route(PREFIX + "/{rest:path}", api.wrap(api.not_found), methods=["GET"]))
    return routes
