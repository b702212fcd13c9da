"""The Starlette application: the hubplane state object, its routes, and ``create_app``.

``Hubplane`` wires the rooms together: hubs (``hubs.py``), negotiate (``negotiate.py``), the
plain-HTTP transports' dispatch (``hubhttp.py``), SSE and long-polling sessions
(``sessions.py``), no-sticky routing (``nosticky.py``), health (``health.py``) and startup,
drain and shutdown (``lifecycle.py``). Transports see none of it but small Protocols.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from backplane import Hub, HubConnectionHandler, HubContext
from backplane.filters import FilterSpec
from backplane.redis.node import RedisNode

from . import logs
from .admin import admin_routes
from .admission import NodeAdmission
from .auth import Authenticator
from .cors import CorsLayer
from .handover import Handover
from .health import Health
from .httputil import json_response as json_response
from .httputil import normalize_path as normalize_path
from .httputil import query_value as query_value
from .hubhttp import HubHttp
from .hubs import HubEndpoint as HubEndpoint
from .hubs import build_endpoints, hub_options, redis_node
from .lifecycle import LONG_POLL_GRACE as LONG_POLL_GRACE
from .lifecycle import Lifecycle
from .metrics import Metrics
from .negotiate import Negotiator
from .nodestats import NodeStats
from .nosticky import Forwarder, NoSticky
from .origins import WebSocketGate
from .proxies import TrustedProxies
from .registry import ConnectionRegistry
from .rest.api import RestApi
from .sessions import HttpSessions
from .settings import Settings, canonical_origins, canonical_transports
from .tasks import BackgroundTasks
from .tokens import TokenSigner
from .transports.http import HttpSession
from .transports.websockets import WebSocketEndpoint
from .web import dashboard_routes

logger = logging.getLogger("hubplane.server")

HTTP_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]

StartupHook = Callable[["Hubplane"], Awaitable[Any] | Any]


class Hubplane:
    """The server's state (``app.state.hubplane``): hubs, connections, timers, lifespan."""

    def __init__(
        self,
        hubs: Mapping[str, type[Hub[Any]]],
        settings: Settings,
        on_startup: Sequence[StartupHook] = (),
        authenticator: Authenticator | None = None,
        filters: Sequence[FilterSpec] = (),
    ) -> None:
        self.settings = settings
        logs.protect()  # tokens masked in the logs of any app, not only the CLI's
        # Draining and the identity hook: what every entry point checks first.
        self.admission = NodeAdmission(authenticator)
        self.registry = ConnectionRegistry()
        self.signer = TokenSigner(settings.token_secret) if settings.token_secret else None
        self.registry.signer = self.signer
        # The transports offered and accepted, in negotiate's order.
        self.transports = canonical_transports(settings.transports)
        self.cors_origins = canonical_origins(settings.cors_origins)
        # Reverse proxies whose X-Forwarded-* headers count (--forwarded-allow-ips).
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self.on_startup = list(on_startup)
        # Owns the tasks transports start from callbacks; cancelled at shutdown.
        self.tasks = BackgroundTasks()
        # SSE and long-polling connections by token (WebSockets need no such table).
        self.sessions = HttpSessions(self.registry, settings.disconnect_timeout, self.tasks)
        self.redis_node: RedisNode | None = redis_node(settings)
        self.endpoints = build_endpoints(hubs, hub_options(settings), self.redis_node, filters)
        self._by_type: dict[type[Hub[Any]], HubEndpoint] = {}
        for endpoint in self.endpoints.values():
            self._by_type.setdefault(endpoint.handler.hub_type, endpoint)
        self.nosticky = NoSticky(
            self.registry, self.sessions, self.signer, self.redis_node, settings.disconnect_timeout
        )
        self.sessions.unreachable = self.nosticky.cut_off
        # With Redis: stateful connections move to whichever node their client comes back to.
        self.handover = (
            Handover(
                self.registry,
                self.redis_node,
                {path: e.handler for path, e in self.endpoints.items()},
                self.tasks,
                owners=self.signer is not None,
                durable=settings.durable_resume,
                disconnect_timeout=settings.disconnect_timeout,
            )
            if self.redis_node is not None
            else None
        )
        self.metrics = Metrics(self) if settings.metrics else None
        # Azure SignalR Service's REST API under /api (--rest-access-key).
        self.rest = RestApi.create(self.endpoints, settings) if settings.rest_access_key else None
        self.lifecycle = Lifecycle(
            self.handlers(),
            self.admission,
            self.registry,
            self.sessions,
            self.nosticky,
            self.tasks,
            self.metrics,
            settings.disconnect_timeout,
            self._run_startup_hooks,
            self.handover,
        )
        self.health = Health(self.admission, self.lifecycle, self.redis_node, self.nosticky)
        # The admin API's figures of this node (and, through Redis, of the cluster).
        self.node_stats = (
            NodeStats(self, ttl=max(5.0, settings.presence_timeout))
            if settings.admin_token
            else None
        )
        if self.node_stats is not None:
            self.lifecycle.every_second.append(self.node_stats.tick)
        self.negotiator = Negotiator(
            self.endpoints, self.admission, self.registry, settings, self.transports
        )
        self.hub_http = HubHttp(
            self.endpoints,
            self.admission,
            self.registry,
            self.sessions,
            self.nosticky,
            self.transports,
        )

    # -- state the runner, metrics, the admin API and tests read ------------------------------

    @property
    def draining(self) -> bool:
        """True once the node refuses new connections; the runner sets it on a signal."""
        return self.admission.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.admission.draining = value

    @property
    def authenticator(self) -> Authenticator | None:
        """The identity hook given to ``create_app``."""
        return self.admission.authenticator

    @property
    def started(self) -> bool:
        """True between startup and shutdown."""
        return self.lifecycle.started

    @property
    def forwarder(self) -> Forwarder | None:
        """No-sticky forwarding over Redis, once started (``--token-secret`` with Redis)."""
        return self.nosticky.forwarder

    @property
    def http_sessions(self) -> dict[str, HttpSession]:
        """SSE and long-polling sessions by token."""
        return self.sessions.sessions

    def hub_context(self, hub: type[Hub[Any]] | str) -> HubContext:
        """The ``HubContext`` of a hub, by class or by path."""
        if isinstance(hub, str):
            endpoint = self.endpoints.get(normalize_path(hub))
        else:
            endpoint = self._by_type.get(hub)
        if endpoint is None:
            raise KeyError(f"no hub {hub!r} is served here")
        return endpoint.handler.context

    def handlers(self) -> list[HubConnectionHandler]:
        """The handler of every hub."""
        return [e.handler for e in self.endpoints.values()]

    def backplane_status(self) -> dict[str, Any]:
        """This node's backplane: Redis reachable or not, and its traffic counters."""
        return self.health.backplane_status()

    def readiness(self) -> str | None:
        """Why this node should get no new clients now (``/readyz``), or None when it should."""
        return self.health.readiness()

    # -- lifecycle ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start and stop the hubs; compose it into a parent app's lifespan when mounting."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Start lifetime managers, timers, then the user's startup hooks."""
        logs.protect()  # again: loggers named since the app was made
        await self.lifecycle.startup()
        logger.info("hubplane started: hubs %s", ", ".join(self.endpoints) or "(none)")

    async def _run_startup_hooks(self) -> None:
        for hook in self.on_startup:
            result = hook(self)
            if inspect.isawaitable(result):
                await result

    async def drain(self, timeout: float = 5.0) -> None:
        """Refuse new connections and close every live one; clients may reconnect elsewhere."""
        await self.lifecycle.drain(timeout)

    async def shutdown(self) -> None:
        """Close every connection (clients may reconnect elsewhere) and stop."""
        await self.lifecycle.shutdown()

    # -- routes -------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for every hub (with and without a trailing slash)."""
        routes: list[BaseRoute] = []
        for path, endpoint in self.endpoints.items():
            base = "" if path == "/" else path
            negotiate = _bind_path(self.negotiator.negotiate, path)
            http = _bind_path(self.hub_http, path)
            ws: Any = WebSocketEndpoint(
                self.admission,
                self.nosticky,
                endpoint.handler,
                path,
                self.settings.disconnect_timeout,
                self.tasks,
                self.handover,
            )
            # Every upgrade passes the origin rules first (origins.py): once per connection.
            ws = WebSocketGate(
                ws,
                "WebSockets" in self.transports,
                frozenset(self.cors_origins),
                self.proxies,
            )
            routes.append(Route(base + "/negotiate", negotiate, methods=["POST"]))
            routes.append(WebSocketRoute(base or "/", ws))
            routes.append(Route(base or "/", http, methods=HTTP_METHODS))
            if base:
                routes.append(WebSocketRoute(base + "/", ws))
                routes.append(Route(base + "/", http, methods=HTTP_METHODS))
        routes.extend(self.health.routes())
        if self.settings.admin_port is None:
            routes.extend(self.operator_routes())
        if self.rest is not None:
            routes.append(Mount("/api", app=self.rest))
        return routes

    def operator_routes(self) -> list[BaseRoute]:
        """``/metrics``, the dashboard and the admin API, as the settings turn them on.

        On the main listener, or with ``--admin-port`` on a listener of their own
        (:meth:`admin_app`), where the hubs' clients cannot reach them.
        """
        routes: list[BaseRoute] = []
        if self.metrics is not None:
            routes.append(Route("/metrics", self.metrics.endpoint, methods=["GET"]))
        if self.settings.dashboard:
            routes.extend(dashboard_routes())  # before the admin API's catch-all
        if self.settings.admin_token:
            routes.extend(admin_routes(self))
        return routes

    def admin_app(self) -> Starlette:
        """The app of the ``--admin-port`` listener: the operator routes and health.

        It has no lifespan of its own: the main app's starts and stops the hubs. Serve it
        beside the main app (``hubplane serve`` does, in the same process), never alone.
        """
        app = Starlette(routes=[*self.health.routes(), *self.operator_routes()])
        app.router.redirect_slashes = False
        app.state.hubplane = self
        return app


def _bind_path(
    fn: Callable[[Request], Awaitable[Response]], path: str
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request.scope["hubplane.path"] = path
        return await fn(request)

    return endpoint


class HubplaneApp(Starlette):
    """A Starlette app whose hub WebSockets (and REST calls) skip the HTTP middleware stack.

    Every WebSocket frame the server sends passes through the ``send`` callable, and
    Starlette's exception middleware wraps it in a Python function per call; hub sockets
    need none of that, so they go straight to the transport (measured: about a fifth of
    the server's CPU time in an echo benchmark). REST calls under ``/api/`` skip the router
    and the middleware the same way. Once the app has middleware of its own, both go through
    it like every other request.
    """

    def __init__(self, hubplane: Hubplane, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # CORS for --cors-origins wraps HTTP requests only, not the hub WebSockets below.
        origins = hubplane.cors_origins
        self._cors = CorsLayer(super().__call__, origins) if origins else None
        self._websockets: dict[str, Any] = {}
        # The REST API, reached straight as well (it answers every error itself), unless a
        # hub's own paths are under /api.
        under_api = any(p == "/api" or p.startswith("/api/") for p in hubplane.endpoints)
        self._rest = None if under_api else hubplane.rest
        for route in self.router.routes:
            if isinstance(route, WebSocketRoute):
                self._websockets[route.path] = route.app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not self.user_middleware:
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            endpoint = self._websockets.get(path)
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        if (
            self._rest is not None
            and scope["type"] == "http"
            and not self.user_middleware
            and scope["path"].startswith("/api/")
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self._rest(scope, receive, send)
            return
        if self._cors is not None and scope["type"] == "http":
            await self._cors(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    hubs: Mapping[str, type[Hub[Any]]],
    settings: Settings | None = None,
    on_startup: Sequence[StartupHook] = (),
    authenticate: Authenticator | None = None,
    *,
    authenticator: Authenticator | None = None,
    filters: Sequence[FilterSpec] = (),
) -> Starlette:
    """A Starlette app serving ``hubs`` ({path: HubClass}); ``app.state.hubplane`` is its state.

    ``authenticate`` (also accepted as ``authenticator``) is the identity hook:
    ``authenticate(request) -> User | str | None``, sync or async. ``filters`` are hub
    filters for every hub (instances or classes), run before each hub's own.
    """
    settings = settings or Settings()
    hubplane = Hubplane(hubs, settings, on_startup, authenticate or authenticator, filters)
    app = HubplaneApp(hubplane, routes=hubplane.routes(), lifespan=hubplane.lifespan)
    app.router.redirect_slashes = False
    app.state.hubplane = hubplane
    return app
