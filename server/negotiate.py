"""``POST {hub}/negotiate``: mint a connection and list the transports (signalr-protocol 2.1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .auth import authenticate, log_refusal, refusal_text
from .httputil import json_response, query_value

if TYPE_CHECKING:
    from .hubs import HubEndpoint
    from .registry import ConnectionRegistry
    from .settings import Settings
    from .transports.base import Admission

logger = logging.getLogger("hubplane.server")


class Negotiator:
    """Answers negotiate for every hub of one app."""

    def __init__(
        self,
        endpoints: Mapping[str, HubEndpoint],
        admission: Admission,
        registry: ConnectionRegistry,
        settings: Settings,
        transports: Sequence[str],
    ) -> None:
        self.endpoints = endpoints
        self.admission = admission
        self.registry = registry
        self.settings = settings
        # The transports offered, in negotiate's order.
        self.transports = transports
        self._refusal_logged = 0.0

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
            user = await authenticate(self.admission.authenticator, request)
        except Exception as exc:
            log_refusal(exc, "at negotiate")
            return PlainTextResponse("Authentication failed", status_code=401)
        refusal = await endpoint.handler.refuses(user)
        if refusal is not None:
            # @authorize on the hub class: 401 without a user, 403 for one it does not admit.
            return PlainTextResponse(refusal_text(refusal), status_code=refusal)
        if self.admission.draining:
            return PlainTextResponse("Server is shutting down", status_code=503)
        if len(self.registry.pending) >= self.settings.max_pending_negotiations:
            # Every negotiate leaves a record until a transport starts it or it expires: a
            # flood of them (no credentials needed without an authenticator) is bounded.
            endpoint.handler.stats.refusals["negotiations"] += 1
            self._log_refusal()
            return PlainTextResponse(
                "Too many connections are waiting to start; try again",
                status_code=503,
                headers={"Retry-After": "1"},
            )
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

    def _log_refusal(self) -> None:
        """One line per ten seconds at most: a flood must not flood the log too."""
        now = time.monotonic()
        if now - self._refusal_logged >= 10.0:
            self._refusal_logged = now
            logger.warning(
                "negotiate refused: %d negotiated connections are waiting for a transport "
                "(--max-pending-negotiations %d)",
                len(self.registry.pending),
                self.settings.max_pending_negotiations,
            )

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
