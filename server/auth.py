"""The pluggable authenticator hook: ``async authenticate(request) -> User | str | None``.

Bearer tokens arrive in two places: the ``Authorization`` header (negotiate, long polling, POSTs,
and WebSockets/SSE from Node, .NET and Java) and the ``access_token`` query parameter (browsers
cannot set headers on WebSockets and ``EventSource``). So that an authenticator needs to look in
one place only, a hub request that carries ``access_token`` and no ``Authorization`` header is
shown to the authenticator with ``Authorization: Bearer <access_token>`` added; the header wins
when both are present. Only hub requests (negotiate and the transports) pass through here, so a
query token is never accepted on other routes. :func:`bearer_token` reads either source.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import HTTPConnection, Request

from backplane import User

from .errors import AuthenticationFailed as AuthenticationFailed  # re-exported

AuthResult = User | str | None
Authenticator = Callable[[HTTPConnection], AuthResult | Awaitable[AuthResult]]

QUERY_TOKEN = "access_token"

logger = logging.getLogger("hubplane.auth")


def log_refusal(exc: Exception, where: str) -> None:
    """Log why an authenticator refused a request ``where`` (e.g. ``"at negotiate"``)."""
    if isinstance(exc, AuthenticationFailed):
        logger.warning("authentication refused %s: %s", where, exc)
    else:
        logger.error("the authenticator failed %s", where, exc_info=exc)


def query_token(request: HTTPConnection) -> str | None:
    """The ``access_token`` query parameter (key matched case-insensitively), or None."""
    params = request.query_params
    value = params.get(QUERY_TOKEN)
    if value is None:
        for key, val in params.multi_items():
            if key.lower() == QUERY_TOKEN:
                return val or None
    return value or None


def bearer_token(request: HTTPConnection) -> str | None:
    """The bearer token of a hub request: the ``Authorization`` header, else ``access_token``."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None
    return query_token(request)


def with_query_token(request: HTTPConnection) -> HTTPConnection:
    """``request``, or a view of it with ``Authorization: Bearer`` made from ``access_token``."""
    if "authorization" in request.headers:
        return request
    token = query_token(request)
    if token is None:
        return request
    try:
        value = b"Bearer " + token.encode("latin-1")
    except UnicodeEncodeError:
        return request  # not a header value; bearer_token() still returns it
    scope = dict(request.scope)
    scope["headers"] = [*request.scope["headers"], (b"authorization", value)]
    if isinstance(request, Request):
        return Request(scope, request.receive)
    return HTTPConnection(scope)


async def authenticate(authenticator: Authenticator | None, request: HTTPConnection) -> User | None:
    """Run the hook (sync or async); a plain string result is taken as the user id."""
    if authenticator is None:
        return None
    result: Any = authenticator(with_query_token(request))
    if inspect.isawaitable(result):
        result = await result
    if result is None or isinstance(result, User):
        return result
    if isinstance(result, str):
        return User(result)
    raise TypeError(f"authenticator returned {type(result).__name__}, expected User, str or None")


def refusal_text(status: int) -> str:
    """The body of a 401 or 403 refusal of a hub request."""
    return "Unauthorized" if status == 401 else "Forbidden"
