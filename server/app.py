"""The Starlette application: negotiate, transports, and the hubplane state object."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from backplane import Hub, HubConnection, HubConnectionHandler, HubContext, HubOptions, User
from backplane.filters import FilterSpec
from backplane.hub import hub_wire_name
from backplane.redis.bus import BackplaneUnavailable
from backplane.redis.node import RedisNode

from .auth import Authenticator, authenticate, refusal_text
from .cors import CorsLayer, origin_allowed
from .httputil import (
    AsgiResponse,
    json_response,
    no_cache,
    normalize_path,
    query_value,
    refuse,
    scope_header,
)
from .metrics import Metrics
from .nosticky import (
    ENDED,
    MAX_FORWARDED_BODY,
    POST_TIMEOUT,
    Forwarder,
    TokenSigner,
    capture_send,
    claims_fresh,
)
from .registry import ConnectionRecord, ConnectionRegistry
from .settings import Settings, canonical_origins, canonical_transports
from .transports import longpolling
from .transports.http import HttpSession, receive_post, request_headers, wait_disconnect
from .transports.longpolling import LongPollingSession, PollResponse, first_poll_response
from .transports.sse import ServerSentEventsStream
from .transports.websockets import WebSocketEndpoint, reject

logger = logging.getLogger("hubplane.server")

HTTP_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]
# How long a draining node waits for a long-polling client to poll for its Close message.
LONG_POLL_GRACE = 1.0

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
        self.signer = TokenSigner(settings.token_secret) if settings.token_secret else None
        self.registry.signer = self.signer
        self.forwarder: Forwarder | None = None
        # The transports offered and accepted, in negotiate's order.
        self.transports = canonical_transports(settings.transports)
        self.cors_origins = canonical_origins(settings.cors_origins)
        # SSE and long-polling connections by token (WebSockets need no such table).
        self.http_sessions: dict[str, HttpSession] = {}
        self.on_startup = list(on_startup)
        self.endpoints: dict[str, HubEndpoint] = {}
        self._by_type: dict[type[Hub[Any]], HubEndpoint] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.started = False
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
                payload_protocols=settings.redis_payload_protocols,
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
        self.metrics = Metrics(self) if settings.metrics else None

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
            "queued": bus.queued,
            "reconnects": stats.reconnects,
            "round_trips": stats.batches,
            "errors": stats.errors,
            "purged_nodes": node.purged_nodes,
            "reregistrations": node.reregistrations,
            "forwarded": self.forwarder.forwarded if self.forwarder else 0,
            "forwards_served": self.forwarder.served if self.forwarder else 0,
        }

    def readiness(self) -> str | None:
        """Why this node should get no new clients now (``/readyz``), or None when it should."""
        if self.draining:
            return "draining"
        if not self.started:
            return "starting"
        node = self.redis_node
        if node is not None and not node.bus.connected:
            return "Redis unreachable"
        return None

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process serves (liveness)."""
        return PlainTextResponse("ok", headers={"cache-control": "no-store"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: 200 when ready for new clients, 503 with the reason otherwise."""
        reason = self.readiness()
        if reason is None:
            return PlainTextResponse("ready", headers={"cache-control": "no-store"})
        return PlainTextResponse(
            f"not ready: {reason}", status_code=503, headers={"cache-control": "no-store"}
        )

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
        if self.signer is not None and self.redis_node is not None:
            # No sticky sessions: connections are owned by the node that started them, and
            # requests landing elsewhere are forwarded to it.
            forwarder = self.forwarder = Forwarder(
                self.redis_node,
                self.handle_forwarded,
                # Longer than a token stays fresh: an ended connection's token starts nothing.
                tombstone_ttl=self.settings.disconnect_timeout + 60,
            )
            await forwarder.start()
            self.registry.on_remove = lambda record: forwarder.release(record.connection_id)
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        for hook in self.on_startup:
            result = hook(self)
            if inspect.isawaitable(result):
                await result
        self.started = True
        logger.info("hubplane started: hubs %s", ", ".join(self.endpoints) or "(none)")

    async def drain(self, timeout: float = 5.0) -> None:
        """Refuse new connections and close every live one; clients may reconnect elsewhere.

        Readiness turns false at once. Invocations already received answer, then every
        client gets a Close with ``allowReconnect`` after what is queued for it. Returns when
        every connection has ended or after ``timeout`` seconds.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        # A long-polling client gets its Close on its next poll (the clients poll again at
        # once); one that has not come back for it within a moment is ended.
        stragglers = loop.call_later(min(LONG_POLL_GRACE, timeout / 2), self._end_idle_polls)
        try:
            await asyncio.gather(*(handler.close_all(timeout) for handler in self.handlers()))
        finally:
            stragglers.cancel()

    def _end_idle_polls(self) -> None:
        for session in list(self.http_sessions.values()):
            if isinstance(session, LongPollingSession) and session.current is None:
                session.end()

    async def shutdown(self) -> None:
        """Close every connection (clients may reconnect elsewhere) and stop."""
        await self.drain()
        # Long-polling connections whose client did not come back for their Close message.
        teardowns = [
            task
            for session in list(self.http_sessions.values())
            if isinstance(session, LongPollingSession) and (task := session.end()) is not None
        ]
        if teardowns:
            await asyncio.wait(teardowns, timeout=5.0)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.forwarder is not None:
            self.forwarder.stop()
        for handler in self.handlers():
            await handler.lifetime.stop()
        self.started = False

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = self.handlers()
        period = min([h.timer_resolution() for h in handlers] + [1.0])
        metrics = self.metrics
        next_metrics = loop.time()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for handler in handlers:
                handler.tick(now)
            self.registry.expire(self.settings.disconnect_timeout)
            if metrics is not None and now >= next_metrics:
                next_metrics = now + 1.0
                metrics.tick()

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
            return PlainTextResponse(refusal_text(refusal), status_code=refusal)
        if self.draining:
            return PlainTextResponse("Server is shutting down", status_code=503)
        # Stateful reconnect only when the client asks and this server allows it (and only
        # with negotiate version 1: version 0 has no connection token to come back with).
        stateful = (
            version >= 1
            and self.settings.stateful_reconnect
            and (query_value(request, "useStatefulReconnect") or "").lower() == "true"
        )
        record = self.registry.create(endpoint.path, user, version, stateful)
        body: dict[str, Any] = {"negotiateVersion": version, "connectionId": record.connection_id}
        if version >= 1:
            body["connectionToken"] = record.token
        body["availableTransports"] = self.available_transports()
        if stateful:
            body["useStatefulReconnect"] = True
        return json_response(body)

    # -- no sticky sessions ---------------------------------------------------------------

    async def locate(self, token: str, path: str, start: bool) -> ConnectionRecord | str | int:
        """Where a request for ``token`` is served, when this node has no live connection for it.

        Returns the record to serve here (adopting a connection negotiated elsewhere), the id of
        the node that owns the connection (forward to it), or an HTTP status to refuse with.
        ``start`` is true for requests that may start a transport (WebSocket, SSE, first poll);
        callers authenticate the request before, so a refused one claims nothing.
        """
        signer = self.signer
        record = self.registry.get(token)
        if signer is None:
            return record if record is not None else 404
        claims = signer.verify(token)
        if claims is None or claims.hub_path != path:
            return record if record is not None else 404
        if self.registry.ended_recently(token):
            return 404  # a token starts one connection, once
        fresh = claims_fresh(claims, self.settings.disconnect_timeout)
        forwarder = self.forwarder
        if forwarder is None:  # one node: the token is all there is to check
            if record is None and not (start and fresh):
                return 404
            return self.registry.adopt(token, claims)
        cid = claims.connection_id or token
        me = forwarder.node.node_id
        try:
            owner = await forwarder.owner(cid)
            if owner is None:
                if not (start and fresh):
                    return 400 if fresh else 404
                owner = await forwarder.claim(cid)
                if owner == me:
                    adopted = self.registry.adopt(token, claims)
                    adopted.owned = True
                    return adopted
            if owner == ENDED:
                return 404
            if owner == me:
                if record is not None and record.connection is not None:
                    return record
                return 404  # claimed here, but it ended (or never started) here
            if not await forwarder.node.is_live(owner):
                return 404
        except BackplaneUnavailable:
            return 503
        return owner

    async def _admit(
        self, request: Request, path: str, transport: str | None
    ) -> User | None | Response:
        """The request's user, or the refusal (authenticator failure, ``@authorize``)."""
        try:
            user = await authenticate(self.authenticator, request)
        except Exception:
            logger.exception("authenticator failed on a %s request", request.method)
            return refuse(transport, 401, "Authentication failed")
        refusal = await self.endpoints[path].handler.refuses(user)
        if refusal is not None:
            return refuse(transport, refusal, refusal_text(refusal))
        return user

    async def handle_forwarded(
        self, token: str, method: str, body: bytes, gone: asyncio.Future[None]
    ) -> tuple[int, str, bytes]:
        """Answer a request another node forwarded for a connection this node runs."""
        session = self.http_sessions.get(token)
        if session is None or session.ended:
            return 404, "text/plain", b"No Connection with that ID"
        if method == "POST":
            async with session.post_lock:
                if session.ended or session.connection.closing:
                    return 404, "text/plain", b"No Connection with that ID"
                await session.connection.receive(body, None)
            return 200, "text/plain", b""
        if not isinstance(session, LongPollingSession):
            return 409, "text/plain", b"Connection already active"
        if method == "DELETE":
            session.end()
            return 202, "text/plain", b""
        send, captured = capture_send()

        async def receive() -> dict[str, Any]:
            await asyncio.shield(gone)  # resolves when the client left the forwarding node
            return {"type": "http.disconnect"}

        await session.poll(receive, send)
        content_type = "application/octet-stream"
        for name, value in captured["headers"]:
            if name == b"content-type":
                content_type = value.decode()
        return int(captured["status"]), content_type, bytes(captured["body"])

    async def forward(self, owner: str, token: str, request: Request) -> Response:
        """Relay a POST, poll or DELETE to the node that owns the connection."""
        assert self.forwarder is not None
        body = b""
        if request.method == "POST":
            chunks = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_FORWARDED_BODY:
                    return PlainTextResponse("Request body too large", status_code=413)
                chunks.append(chunk)
            body = b"".join(chunks)
        timeout = longpolling.POLL_TIMEOUT + 10.0 if request.method == "GET" else POST_TIMEOUT
        # A poll's client may give up (it aborts its poll when it stops): the owner is told.
        gone = (
            asyncio.get_running_loop().create_task(wait_disconnect(request.receive))
            if request.method == "GET"
            else None
        )
        try:
            status, content_type, answer = await self.forwarder.forward(
                owner, token, request.method, body, timeout, gone
            )
        finally:
            if gone is not None:
                gone.cancel()
        response = Response(answer, status_code=status, media_type=content_type)
        if request.method == "GET":
            no_cache(response)
        return response

    def available_transports(self) -> list[dict[str, Any]]:
        """Negotiate's ``availableTransports``: WebSockets, SSE, long polling, as enabled.

        SSE carries text only, so it is left out when JSON is not served.
        """
        protocols = self.settings.protocols
        formats = ["Text", "Binary"] if "messagepack" in protocols else ["Text"]
        listed: list[dict[str, Any]] = []
        for transport in self.transports:
            if transport == "ServerSentEvents":
                if "json" in protocols:
                    listed.append({"transport": transport, "transferFormats": ["Text"]})
            else:
                listed.append({"transport": transport, "transferFormats": formats})
        return listed

    async def hub_http(self, request: Request) -> Response:
        """Plain HTTP requests to the hub path: SSE streams, polls, POSTs and DELETEs.

        Status codes follow ASP.NET Core's HttpConnectionDispatcher (signalr-protocol.md 3.1).
        """
        method = request.method
        if method not in ("GET", "POST", "DELETE"):
            return PlainTextResponse("Method Not Allowed", status_code=405)
        path = request.scope["hubplane.path"]
        transport = None
        if method == "GET":
            sse = "text/event-stream" in request.headers.get("accept", "")
            transport = "ServerSentEvents" if sse else "LongPolling"
        token = query_value(request, "id")
        if not token:
            return refuse(transport, 400, "Connection ID required")
        record = self.registry.get(token)
        admitted: Any = _NOT_YET
        user: User | None = None
        if self.signer is not None and (record is None or record.connection is None):
            # No sticky sessions: the connection may have been negotiated or started elsewhere.
            # Everything that refuses a request is checked before a connection is claimed.
            if transport is not None and transport not in self.transports:
                return refuse(
                    transport, 404, f"{transport} transport not supported by this end point type"
                )
            admitted = await self._admit(request, path, transport)
            if isinstance(admitted, Response):
                return admitted
            user = admitted
            # A draining node starts nothing, but still forwards requests of connections that
            # live on other nodes.
            start = method == "GET" and not self.draining
            located = await self.locate(token, path, start=start)
            if isinstance(located, int):
                if self.draining and method == "GET":
                    return refuse(transport, 503, "Server is shutting down")
                text = "No Connection with that ID" if located == 404 else "Cannot serve this"
                if located == 400:
                    text = "The connection has not started a transport yet."
                return refuse(transport, located, text)
            if isinstance(located, str):
                if transport == "ServerSentEvents":
                    return refuse(transport, 409, "Connection already active")
                return await self.forward(located, token, request)
            record = located
        if record is None or record.hub_path != path:
            return refuse(transport, 404, "No Connection with that ID")
        if method == "POST" and record.transport == "WebSockets":
            return PlainTextResponse(
                "POST requests are not allowed for WebSocket connections.", status_code=405
            )
        if method == "DELETE" and record.transport != "LongPolling":
            return PlainTextResponse(
                "Cannot terminate this connection using the DELETE endpoint.", status_code=400
            )
        if transport is not None:
            if transport not in self.transports:
                return refuse(
                    transport, 404, f"{transport} transport not supported by this end point type"
                )
            if record.transport is not None and record.transport != transport:
                return refuse(transport, 400, "Cannot change transports mid-connection")
        handler = self.endpoints[path].handler
        if admitted is _NOT_YET:
            admitted = await self._admit(request, path, transport)
            if isinstance(admitted, Response):
                return admitted
            user = admitted
        session = self.http_sessions.get(token)
        if method == "POST":
            if session is None:
                # Nothing can read the bytes before the SSE stream or the first poll started
                # the connection (the official clients never send this early).
                return PlainTextResponse(
                    "The connection has not started a transport yet.", status_code=400
                )
            return await receive_post(request, session)
        if method == "DELETE":
            if isinstance(session, LongPollingSession):
                session.end()
            return PlainTextResponse("", status_code=202)
        if transport == "LongPolling" and isinstance(session, LongPollingSession):
            return AsgiResponse(PollResponse(session))
        if record.connection is not None:
            # A second SSE stream while the first is live (a finished stream's token is gone).
            return refuse(transport, 409, "Connection already active")
        if self.draining:
            return refuse(transport, 503, "Server is shutting down")
        if record.user is not None and (user is None or user.id != record.user.id):
            logger.info("connection %s: the user changed after negotiate", record.connection_id)
        sse = transport == "ServerSentEvents"
        connection = HubConnection(
            handler,
            record.connection_id,
            transport=transport or "LongPolling",
            user=user,
            headers=request_headers(request),
            query=dict(request.query_params),
            supports_binary=not sse,
            send_pings=sse,
        )
        record.transport = transport
        record.connection = connection
        if sse:
            session = self.http_sessions[token] = HttpSession(record, connection)
            return AsgiResponse(ServerSentEventsStream(self, session))
        self.http_sessions[token] = LongPollingSession(self, record, connection)
        return first_poll_response()

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for every hub (with and without a trailing slash)."""
        routes: list[BaseRoute] = []
        for path, endpoint in self.endpoints.items():
            base = "" if path == "/" else path
            negotiate = _bind_path(self.negotiate, path)
            http = _bind_path(self.hub_http, path)
            ws: Any = WebSocketEndpoint(self, endpoint.handler, path)
            if "WebSockets" not in self.transports or self.cors_origins:
                ws = WebSocketGate(ws, self)
            routes.append(Route(base + "/negotiate", negotiate, methods=["POST"]))
            routes.append(WebSocketRoute(base or "/", ws))
            routes.append(Route(base or "/", http, methods=HTTP_METHODS))
            if base:
                routes.append(WebSocketRoute(base + "/", ws))
                routes.append(Route(base + "/", http, methods=HTTP_METHODS))
        routes.append(Route("/healthz", self.healthz, methods=["GET", "HEAD"]))
        routes.append(Route("/readyz", self.readyz, methods=["GET", "HEAD"]))
        if self.metrics is not None:
            routes.append(Route("/metrics", self.metrics.endpoint, methods=["GET"]))
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


class WebSocketGate:
    """Refuses hub WebSocket upgrades before the transport runs.

    404 when WebSockets are not among ``--transports``; 403 when ``--cors-origins`` is set and
    the upgrade carries an ``Origin`` not in it (browsers apply no CORS to WebSockets, so a
    page from anywhere could otherwise open one with the user's cookies). Requests without an
    ``Origin`` (non-browser clients) pass. Only installed when one of the two applies, so the
    WebSocket path of a default server is unchanged.
    """

    def __init__(self, endpoint: Any, hubplane: Hubplane) -> None:
        self.endpoint = endpoint
        self.enabled = "WebSockets" in hubplane.transports
        self.origins = frozenset(hubplane.cors_origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status, text = 0, ""
        if not self.enabled:
            status, text = 404, "WebSockets transport not supported by this end point type"
        elif self.origins:
            origin = scope_header(scope, b"origin")
            if origin is not None and not origin_allowed(origin, self.origins):
                status, text = 403, "Origin not allowed"
        if not status:
            await self.endpoint(scope, receive, send)
            return
        first = await receive()
        if first["type"] == "websocket.connect":
            await reject(scope, send, status, text)


_NOT_YET = object()  # hub_http: the request has not been authenticated yet


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
        # CORS for --cors-origins wraps HTTP requests only, not the hub WebSockets below.
        origins = hubplane.cors_origins
        self._cors = CorsLayer(super().__call__, origins) if origins else None
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
