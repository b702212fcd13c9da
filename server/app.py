"""The Starlette application: negotiate, transports, and the hubplane state object."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from backplane import Hub, HubConnectionHandler, HubContext, HubOptions
from backplane.filters import FilterSpec
from backplane.hub import hub_wire_name
from backplane.redis.node import RedisNode

from .auth import Authenticator, authenticate
from .registry import ConnectionRegistry
from .settings import Settings
from .transports.websockets import WebSocketEndpoint

logger = logging.getLogger("hubplane.server")

HTTP_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]

StartupHook = Callable[["Hubplane"], Awaitable[Any] | Any]


class HubEndpoint:
    """One hub served at one path."""

    def __init__(self, path: str, handler: HubConnectionHandler) -> None:
        self.path = path
        self.handler = handler


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
        self.authenticator = authenticator
        self.registry = ConnectionRegistry()
        self.on_startup = list(on_startup)
        self.endpoints: dict[str, HubEndpoint] = {}
        self._by_type: dict[type[Hub[Any]], HubEndpoint] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.draining = False
        options = HubOptions(
            keepalive_interval=settings.keepalive_interval,
            client_timeout=settings.client_timeout,
            handshake_timeout=settings.handshake_timeout,
            max_message_size=settings.max_message_size or None,
            detailed_errors=settings.detailed_errors,
            max_buffer_size=settings.max_buffer_size,
            protocols=tuple(settings.protocols),
            client_result_timeout=settings.client_result_timeout,
            close_on_token_expiry=settings.close_on_token_expiry,
        )
        self.redis_node: RedisNode | None = None
        if settings.redis_url:
            self.redis_node = RedisNode(
                settings.redis_url,
                channel_prefix=settings.channel_prefix,
                heartbeat=settings.presence_heartbeat,
                timeout=settings.presence_timeout,
                buffer_limit=settings.redis_buffer,
            )
        for raw_path, hub_type in hubs.items():
            path = normalize_path(raw_path)
            if path in self.endpoints:
                raise ValueError(f"two hubs at {path!r}")
            lifetime = None
            if self.redis_node is not None:
                lifetime = self.redis_node.manager(hub_wire_name(hub_type), options.protocols)
            handler = HubConnectionHandler(hub_type, options, lifetime, filters)
            endpoint = HubEndpoint(path, handler)
            self.endpoints[path] = endpoint
            self._by_type.setdefault(hub_type, endpoint)

    def hub_context(self, hub: type[Hub[Any]] | str) -> HubContext:
        """The ``HubContext`` of a hub, by class or by path."""
        if isinstance(hub, str):
            endpoint = self.endpoints.get(normalize_path(hub))
        else:
            endpoint = self._by_type.get(hub)
        if endpoint is None:
            raise KeyError(f"no hub {hub!r} is served here")
        return endpoint.handler.context

    def backplane_status(self) -> dict[str, Any]:
        """This node's backplane: Redis reachable or not, and its traffic counters.

        Readiness and metrics read this; the admin API serves it at ``/_hubplane/backplane``.
        """
        node = self.redis_node
        if node is None:
            return {"mode": "memory", "connected": True}
        bus = node.bus
        stats = bus.stats
        return {
            "mode": "redis",
            "node": node.node_id,
            "connected": bus.connected,
            "last_error": bus.last_error,
            "published": stats.published,
            "received": stats.received,
            "buffered": stats.buffered,
            "dropped": stats.dropped,
            "queued": len(bus._queue),
            "reconnects": stats.reconnects,
            "round_trips": stats.batches,
            "errors": stats.errors,
            "purged_nodes": node.purged_nodes,
            "reregistrations": node.reregistrations,
        }

    def handlers(self) -> list[HubConnectionHandler]:
        """The handler of every hub."""
        return [e.handler for e in self.endpoints.values()]

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
        for handler in self.handlers():
            await handler.lifetime.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        for hook in self.on_startup:
            result = hook(self)
            if inspect.isawaitable(result):
                await result
        logger.info("hubplane started: hubs %s", ", ".join(self.endpoints) or "(none)")

    async def close_connections(self) -> None:
        """Refuse new connections and close every live one; clients may reconnect elsewhere."""
        self.draining = True
        await asyncio.gather(
            *(handler.close_all(None, allow_reconnect=True) for handler in self.handlers())
        )

    async def shutdown(self) -> None:
        """Close every connection (clients may reconnect elsewhere) and stop."""
        await self.close_connections()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for handler in self.handlers():
            await handler.lifetime.stop()

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = self.handlers()
        period = min([h.timer_resolution() for h in handlers] + [1.0])
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for handler in handlers:
                handler.tick(now)
            self.registry.expire(self.settings.disconnect_timeout)

    # -- HTTP endpoints ----------------------------------------------------------------------

    async def negotiate(self, request: Request) -> Response:
        """``POST {hub}/negotiate``: mint a connection and list the transports."""
        endpoint = self.endpoints[request.scope["hubplane.path"]]
        version_text = query_value(request, "negotiateVersion")
        if version_text is None:
            version = 0
        else:
            try:
                version = int(version_text)
            except ValueError:
                return json_response(
                    {"error": "The client requested a non-integer protocol version."}
                )
            if version < 0:
                return json_response(
                    {
                        "error": f"The client requested version '{version}', but the server "
                        "does not support this version."
                    }
                )
            version = min(version, 1)
        try:
            user = await authenticate(self.authenticator, request)
        except Exception:
            logger.exception("authenticator failed at negotiate")
            return PlainTextResponse("Authentication failed", status_code=401)
        refusal = await endpoint.handler.refuses(user)
        if refusal is not None:
            # @authorize on the hub class: 401 without a user, 403 for one it does not admit.
            text = "Unauthorized" if refusal == 401 else "Forbidden"
            return PlainTextResponse(text, status_code=refusal)
        if self.draining:
            return PlainTextResponse("Server is shutting down", status_code=503)
        record = self.registry.create(endpoint.path, user, version)
        formats = ["Text", "Binary"] if "messagepack" in self.settings.protocols else ["Text"]
        body: dict[str, Any] = {"negotiateVersion": version, "connectionId": record.connection_id}
        if version >= 1:
            body["connectionToken"] = record.token
        body["availableTransports"] = [{"transport": "WebSockets", "transferFormats": formats}]
        return json_response(body)

    async def hub_http(self, request: Request) -> Response:
        """Plain HTTP requests to the hub path (the SSE and long-polling entry points)."""
        token = query_value(request, "id")
        if request.method not in ("GET", "POST", "DELETE"):
            return PlainTextResponse("Method Not Allowed", status_code=405)
        if not token:
            return PlainTextResponse("Connection ID required", status_code=400)
        record = self.registry.get(token)
        if record is None or record.hub_path != request.scope["hubplane.path"]:
            return PlainTextResponse("No Connection with that ID", status_code=404)
        if request.method == "POST" and record.transport == "WebSockets":
            return PlainTextResponse(
                "POST requests are not allowed for WebSocket connections.", status_code=405
            )
        if request.method == "DELETE":
            return PlainTextResponse(
                "Cannot terminate this connection using the DELETE endpoint.", status_code=400
            )
        transport = (
            "ServerSentEvents"
            if "text/event-stream" in request.headers.get("accept", "")
            else "LongPolling"
        )
        return PlainTextResponse(
            f"{transport} transport not supported by this end point type", status_code=404
        )

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for every hub (with and without a trailing slash)."""
        routes: list[BaseRoute] = []
        for path, endpoint in self.endpoints.items():
            base = "" if path == "/" else path
            negotiate = _bind_path(self.negotiate, path)
            http = _bind_path(self.hub_http, path)
            ws = WebSocketEndpoint(self, endpoint.handler, path)
            routes.append(Route(base + "/negotiate", negotiate, methods=["POST"]))
            routes.append(WebSocketRoute(base or "/", ws))
            routes.append(Route(base or "/", http, methods=HTTP_METHODS))
            if base:
                routes.append(WebSocketRoute(base + "/", ws))
                routes.append(Route(base + "/", http, methods=HTTP_METHODS))
        if self.settings.admin_token:
            from .admin import admin_routes  # imported here: admin builds on this module

            routes.extend(admin_routes(self))
        return routes


def _bind_path(
    fn: Callable[[Request], Awaitable[Response]], path: str
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request.scope["hubplane.path"] = path
        return await fn(request)

    return endpoint


def normalize_path(path: str) -> str:
    """``/hubs/chat/`` -> ``/hubs/chat``; always one leading slash."""
    path = "/" + path.strip("/")
    return path


def query_value(request: Request, name: str) -> str | None:
    """A query parameter, matched case-insensitively as ASP.NET Core does."""
    value = request.query_params.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in request.query_params.multi_items():
        if key.lower() == lowered:
            return val
    return None


def json_response(body: Any, status_code: int = 200) -> Response:
    """A compact JSON response."""
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


class HubplaneApp(Starlette):
    """A Starlette app whose hub WebSockets skip the HTTP middleware stack.

    Every WebSocket frame the server sends passes through the ``send`` callable, and
    Starlette's exception middleware wraps it in a Python function per call; hub sockets
    need none of that, so they go straight to the transport (measured: about a fifth of
    the server's CPU time in an echo benchmark). Once the app has middleware of its own,
    hub WebSockets go through it like every other request.
    """

    def __init__(self, hubplane: Hubplane, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._websockets: dict[str, Any] = {}
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
