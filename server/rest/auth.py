"""The REST API's bearer tokens: HS256 with the access key (``hs256.py``), ``exp`` required,
``nbf`` honoured, ``aud`` the URL.

The audience is the URL the token was made for, compared with the request's ignoring the
query string and the port (the Management SDK signs ``scheme://host/path?api-version=...``
without the port), scheme and host case-insensitively, paths percent-decoded. Behind a proxy
listed in ``--forwarded-allow-ips``, ``X-Forwarded-Host`` and ``X-Forwarded-Proto`` give the
URL the caller saw. A verified token is remembered (bounded), so a caller that reuses one
pays for its signature once; its expiry and audience are checked on every request.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

from ..proxies import TrustedProxies as TrustedProxies  # re-exported
from ..proxies import forwarded
from . import hs256
from .errors import RestError
from .request import RestRequest

#: Seconds of clock skew allowed on ``exp`` and ``nbf``.
LEEWAY = 30.0
#: Verified tokens remembered; the table starts afresh when full.
CACHE_SIZE = 4096

_CHALLENGE = {"www-authenticate": 'Bearer realm="hubplane"'}


def refused(reason: str) -> RestError:
    """A 401 with its reason and the Bearer challenge."""
    return RestError(401, reason, dict(_CHALLENGE))


def normalize_audience(url: str) -> str | None:
    """``scheme://host/path`` of a URL, lower-case scheme and host, no port, no query."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    return f"{parts.scheme.lower()}://{host}{unquote(parts.path) or '/'}"


def _host_only(host: str) -> str:
    """``Example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_audience(request: RestRequest, proxies: TrustedProxies) -> str:
    """The normalized URL of ``request`` as its caller addressed it."""
    scope = request.scope
    headers = request.headers
    scheme = forwarded(scope, b"x-forwarded-proto", proxies) or str(scope.get("scheme", "http"))
    host = forwarded(scope, b"x-forwarded-host", proxies) or headers.get("host")
    if not host:
        server = scope.get("server")
        host = str(server[0]) if server else "localhost"
    return f"{scheme.lower()}://{_host_only(host)}{request.path or '/'}"


class TokenVerifier:
    """Checks the bearer token of a REST call."""

    def __init__(self, key: str, proxies: TrustedProxies) -> None:
        self.key = key.encode()
        self.proxies = proxies
        # token -> (not before, expires, audiences): what a verified token allows.
        self._verified: dict[str, tuple[float, float, tuple[str, ...]]] = {}

    def check(self, request: RestRequest) -> None:
        """Return when the request carries a valid token for its URL; else a 401 RestError."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise refused("a bearer token is required (Authorization: Bearer <JWT>)")
        entry = self._verified.get(token)
        if entry is None:
            entry = self._verify(token)
        not_before, expires, audiences = entry
        now = time.time()
        if now > expires + LEEWAY:
            self._verified.pop(token, None)
            raise refused("the token has expired")
        if now < not_before - LEEWAY:
            raise refused("the token is not valid yet")
        if request_audience(request, self.proxies) not in audiences:
            raise refused("the token's audience (aud) is not this URL")

    def _verify(self, token: str) -> tuple[float, float, tuple[str, ...]]:
        try:
            claims = hs256.verify(token, self.key)
        except hs256.TokenError as exc:
            raise refused(str(exc)) from None
        expires = _number(claims.get("exp"))
        if expires is None:
            raise refused("the token has no exp claim (a number)")
        not_before = _number(claims.get("nbf"))
        raw = claims.get("aud")
        listed = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        audiences = tuple(a for a in map(_audience_of, listed) if a is not None)
        if not audiences:
            raise refused("the token has no aud claim naming a URL")
        entry = (not_before or 0.0, expires, audiences)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = entry
        return entry


def _audience_of(value: Any) -> str | None:
    return normalize_audience(value) if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
