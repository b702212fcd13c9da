"""The REST API's ASGI app, mounted at ``/api`` when ``--rest-access-key`` is set.

Each call: read it (limits), answer ``/api/health`` without a token, check the token, the
``api-version`` (``/api/hubs/...`` only), the hub and the path, then run the handler. Any
refusal is a 4xx with ``{"error": reason}`` and sends nothing; a failure of the backplane
is a 503 or 504, and anything unexpected a 500 that is logged. The node keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from backplane.errors import ConnectionNotFoundError, LimitExceededError
from backplane.redis.bus import BackplaneUnavailable

from .auth import TokenVerifier, TrustedProxies
from .call import OK, Call
from .errors import RestError
from .hubnames import hub_contexts
from .request import Receive, Reply, RestRequest, Send, send_reply
from .routes import API_VERSIONS, LEGACY, VERSIONED, handler_for, match

if TYPE_CHECKING:
    from backplane import HubContext

    from ..hubs import HubEndpoint
    from ..settings import Settings

logger = logging.getLogger("hubplane.rest")

_HEALTH_METHODS = ("GET", "HEAD")


def error_reply(status: int, reason: str, headers: dict[str, str] | None = None) -> Reply:
    """``{"error": reason}`` with ``status``."""
    return Reply(status, orjson.dumps({"error": reason}), "application/json", headers)


class RestApi:
    """Azure SignalR Service's data-plane REST API over this node's hubs."""

    def __init__(self, hubs: Mapping[str, HubContext[Any]], verifier: TokenVerifier) -> None:
        #: Hub contexts by REST name (lower case).
        self.hubs = dict(hubs)
        self.verifier = verifier

    @classmethod
    def create(cls, endpoints: Mapping[str, HubEndpoint], settings: Settings) -> RestApi:
        """The API over ``endpoints``; the hubs' connections start joining their users' groups
        as they connect. SettingsError when two hubs share a REST name."""
        assert settings.rest_access_key
        hubs = hub_contexts(endpoints)
        for context in hubs.values():
            if context.lifetime.user_groups is not None:
                context.lifetime.user_groups.apply_on_connect = True
        proxies = TrustedProxies(settings.forwarded_allow_ips)
        return cls(hubs, TokenVerifier(settings.rest_access_key, proxies))

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            request = RestRequest(scope)
            await request.read_body(receive)
            reply = await self.answer(request)
        except RestError as exc:
            reply = error_reply(exc.status, exc.reason, exc.headers)
        except ConnectionNotFoundError as exc:
            reply = error_reply(404, str(exc))
        except LimitExceededError as exc:
            reply = error_reply(409, str(exc))  # a connection's limit: the text names it
        except BackplaneUnavailable as exc:
            reply = error_reply(503, f"the backplane is unavailable: {exc}")
        except TimeoutError as exc:
            reply = error_reply(504, str(exc) or "a node did not answer in time")
        except Exception:
            logger.exception("REST %s %s failed", scope.get("method"), scope.get("path"))
            reply = error_reply(500, "the request failed on the server, see its log")
        await send_reply(send, reply, head=scope["method"] == "HEAD")

    async def answer(self, request: RestRequest) -> Reply:
        """Route and run one call."""
        segments = request.segments
        if segments[1:] in (["health"], ["v1", "health"]):
            if request.method not in _HEALTH_METHODS:
                raise RestError(405, "use HEAD or GET", {"allow": "GET, HEAD"})
            return OK
        self.verifier.check(request)
        if len(segments) >= 3 and segments[1].lower() == "hubs":
            version = request.query("api-version")
            if not version:
                raise RestError(400, f"api-version is required: one of {', '.join(API_VERSIONS)}")
            if version not in API_VERSIONS:
                raise RestError(
                    400, f"unsupported api-version {version!r}: use {', '.join(API_VERSIONS)}"
                )
            name, rest, routes = segments[2], segments[3:], VERSIONED
        elif len(segments) >= 4 and [s.lower() for s in segments[1:3]] == ["v1", "hubs"]:
            version, name, rest, routes = None, segments[3], segments[4:], LEGACY
        else:
            raise RestError(404, "no such REST API path (see docs/rest-api.md)")
        hub = self.hubs.get(name.lower())
        if hub is None:
            raise RestError(404, f"no hub named {name!r} is served here")
        route, params = match(routes, rest)
        handler = handler_for(route, request.method)
        if version is not None and version < route.since:
            raise RestError(400, f"this path needs api-version {route.since} or later")
        return await handler(Call(request, hub, params, version))
