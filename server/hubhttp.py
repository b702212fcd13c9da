"""Plain HTTP requests to a hub path: SSE streams, polls, POSTs and DELETEs.

Status codes follow ASP.NET Core's HttpConnectionDispatcher (signalr-protocol.md 3.1). Every
request first finds its connection (here, or with no sticky sessions on another node, where it
is forwarded) and passes the checks all methods share; then one small handler per method runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from backplane import HubConnection, User

from .auth import authenticate, log_refusal, refusal_text
from .httputil import AsgiResponse, query_value, refuse
from .transports.http import HttpSession, receive_post, request_headers
from .transports.longpolling import LongPollingSession, PollResponse, empty_poll_response
from .transports.sse import ServerSentEventsStream

#: How long a request for a connection held on another node waits for an unreachable Redis.
REDIS_WAIT = 15.0

if TYPE_CHECKING:
    from .hubs import HubEndpoint
    from .nosticky import NoSticky
    from .registry import ConnectionRecord, ConnectionRegistry
    from .sessions import HttpSessions
    from .transports.base import Admission

logger = logging.getLogger("hubplane.server")

# (request, token, record, user, transport) -> response: what one method does once the
# connection is found and the shared checks passed.
MethodHandler = Callable[
    [Request, str, "ConnectionRecord", User | None, str | None], Awaitable[Response]
]


class HubHttp:
    """The endpoint of plain HTTP requests to every hub path of one app."""

    def __init__(
        self,
        endpoints: Mapping[str, HubEndpoint],
        admission: Admission,
        registry: ConnectionRegistry,
        sessions: HttpSessions,
        nosticky: NoSticky,
        transports: Sequence[str],
    ) -> None:
        self.endpoints = endpoints
        self.admission = admission
        self.registry = registry
        self.sessions = sessions
        self.nosticky = nosticky
        # The transports accepted (``--transports``).
        self.transports = transports
        self.methods: dict[str, MethodHandler] = {
            "GET": self.get,
            "POST": self.post,
            "DELETE": self.delete,
        }

    async def __call__(self, request: Request) -> Response:
        """Find the request's connection, check it, then run its method's handler."""
        method = request.method
        serve = self.methods.get(method)
        if serve is None:
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
        admitted = False
        user: User | None = None
        if self.nosticky.signer is not None and (record is None or record.connection is None):
            # No sticky sessions: the connection may have been negotiated or started elsewhere.
            routed = await self._route(request, token, path, transport)
            if isinstance(routed, Response):
                return routed
            record, user = routed
            admitted = True
        refusal = self._misfit(record, path, method, transport)
        if refusal is not None:
            return refusal
        assert record is not None  # _misfit refuses an unknown token
        if not admitted:
            identified = await self._admit(request, path, transport)
            if isinstance(identified, Response):
                return identified
            user = identified
        return await serve(request, token, record, user, transport)

    async def _route(
        self, request: Request, token: str, path: str, transport: str | None
    ) -> tuple[ConnectionRecord, User | None] | Response:
        """The record to serve here with the request's user, or the refusal or forwarded answer.

        Everything that refuses a request is checked before a connection is claimed.
        """
        if transport is not None and transport not in self.transports:
            return refuse(
                transport, 404, f"{transport} transport not supported by this end point type"
            )
        admitted = await self._admit(request, path, transport)
        if isinstance(admitted, Response):
            return admitted
        draining = self.admission.draining
        method = request.method
        # While Redis is known to be down a request for a connection held elsewhere cannot be
        # routed: it waits (bounded) for Redis rather than failing the client at once. Nothing
        # was sent for it yet, so nothing is done twice.
        if self.nosticky.forwarder is not None and self.nosticky.record_elsewhere(token):
            await self.nosticky.redis_back(REDIS_WAIT)
        # A draining node starts nothing, but still forwards requests of connections that
        # live on other nodes.
        located = await self.nosticky.locate(token, path, start=method == "GET" and not draining)
        if isinstance(located, int):
            if draining and method == "GET":
                return refuse(transport, 503, "Server is shutting down")
            if located == 503 and method == "GET" and transport == "LongPolling":
                # Redis failed while finding the node that holds it: an empty poll rather
                # than an error that ends the connection.
                return empty_poll_response()
            text = "No Connection with that ID" if located == 404 else "Cannot serve this"
            if located == 400:
                text = "The connection has not started a transport yet."
            return refuse(transport, located, text)
        if isinstance(located, str):
            if transport == "ServerSentEvents":
                return refuse(transport, 409, "Connection already active")
            return await self.nosticky.forward(located, token, request)
        return located, admitted

    def _misfit(
        self, record: ConnectionRecord | None, path: str, method: str, transport: str | None
    ) -> Response | None:
        """The refusal of a request that does not fit its connection, or None."""
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
        return None

    async def _admit(
        self, request: Request, path: str, transport: str | None
    ) -> User | None | Response:
        """The request's user, or the refusal (authenticator failure, ``@authorize``)."""
        try:
            user = await authenticate(self.admission.authenticator, request)
        except Exception as exc:
            log_refusal(exc, f"on a {request.method} request")
            return refuse(transport, 401, "Authentication failed")
        refusal = await self.endpoints[path].handler.refuses(user)
        if refusal is not None:
            return refuse(transport, refusal, refusal_text(refusal))
        return user

    async def post(
        self,
        request: Request,
        token: str,
        record: ConnectionRecord,
        user: User | None,
        transport: str | None,
    ) -> Response:
        """``POST {hub}?id=``: client-to-server bytes of an SSE or long-polling connection."""
        session = self.sessions.get(token)
        if session is None:
            # Nothing can read the bytes before the SSE stream or the first poll started
            # the connection (the official clients never send this early).
            return PlainTextResponse(
                "The connection has not started a transport yet.", status_code=400
            )
        return await receive_post(request, session)

    async def delete(
        self,
        request: Request,
        token: str,
        record: ConnectionRecord,
        user: User | None,
        transport: str | None,
    ) -> Response:
        """``DELETE {hub}?id=``: the client ends its long-polling connection."""
        session = self.sessions.get(token)
        if isinstance(session, LongPollingSession):
            session.end()
        return PlainTextResponse("", status_code=202)

    async def get(
        self,
        request: Request,
        token: str,
        record: ConnectionRecord,
        user: User | None,
        transport: str | None,
    ) -> Response:
        """``GET {hub}?id=``: a poll of a live connection, or the request that starts one."""
        session = self.sessions.get(token)
        if transport == "LongPolling" and isinstance(session, LongPollingSession):
            return AsgiResponse(PollResponse(session))
        if record.connection is not None:
            # A second SSE stream while the first is live (a finished stream's token is gone).
            return refuse(transport, 409, "Connection already active")
        if self.admission.draining:
            return refuse(transport, 503, "Server is shutting down")
        if record.user is not None and (user is None or user.id != record.user.id):
            logger.info("connection %s: the user changed after negotiate", record.connection_id)
        return self._start(request, token, record, user, transport)

    def _start(
        self,
        request: Request,
        token: str,
        record: ConnectionRecord,
        user: User | None,
        transport: str | None,
    ) -> Response:
        """Start the connection on SSE (the stream is the response) or long polling."""
        sse = transport == "ServerSentEvents"
        connection = HubConnection(
            self.endpoints[record.hub_path].handler,
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
        sessions = self.sessions
        if sse:
            session = HttpSession(record, connection)
            sessions.add(token, session)
            return AsgiResponse(ServerSentEventsStream(sessions, session))
        sessions.add(token, LongPollingSession(sessions, record, connection))
        return empty_poll_response()
