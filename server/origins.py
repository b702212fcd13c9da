"""Which pages may open a hub WebSocket: the defence against cross-site WebSocket hijacking.

Browsers apply no CORS to WebSockets: a page from any site can open one to a hub, and the
browser sends the user's cookies for the hub's site with the upgrade. A server whose users are
identified by cookies would then serve that page as the user. So before a hub's WebSocket
transport runs:

- with ``--cors-origins``, an upgrade whose ``Origin`` is not listed is refused (403);
- without it, an upgrade carrying a ``Cookie`` header and an ``Origin`` whose host and port
  differ from the request's ``Host`` (or the ``X-Forwarded-Host`` of a proxy listed in
  ``--forwarded-allow-ips``) is refused (403): the same-origin rule browsers apply elsewhere.

Clients that send no ``Origin`` (Node, .NET, Java, Python) and browser clients that carry a
token instead of cookies are never refused by the second rule.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .cors import origin_allowed
from .httputil import scope_header
from .proxies import TrustedProxies, forwarded
from .transports.websockets import reject

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def same_origin(origin: str, host: str) -> bool:
    """True when ``origin`` (``scheme://host[:port]``) names the site ``host`` (a ``Host``).

    Host names compare case-insensitively, ports exactly, an absent port being the default of
    the Origin's scheme; a ``Host`` without a port matches an Origin on its scheme's default
    port (the scheme the client used is unknown behind a proxy that ends TLS). ``null`` and
    non-web origins never match.
    """
    try:
        parts = urlsplit(origin.strip())
        origin_host = parts.hostname
        origin_port = parts.port
        target = urlsplit("//" + host.strip())
        host_name = target.hostname
        host_port = target.port
    except ValueError:  # a port that is not a number
        return False
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or not origin_host or not host_name or origin_host != host_name:
        return False
    if host_port is None:
        return origin_port is None or origin_port == default
    return (origin_port or default) == host_port


def cross_site_with_cookies(scope: Any, proxies: TrustedProxies) -> bool:
    """True for an upgrade from a page of another site that carries cookies."""
    origin = host = None
    cookies = False
    for key, value in scope["headers"]:
        if key == b"origin":
            origin = value.decode("latin-1")
        elif key == b"cookie":
            cookies = cookies or bool(value.strip())
        elif key == b"host" and host is None:
            host = value.decode("latin-1")
    if origin is None or not cookies:
        return False
    host = forwarded(scope, b"x-forwarded-host", proxies) or host
    return host is None or not same_origin(origin, host)


class WebSocketGate:
    """Refuses hub WebSocket upgrades before the transport runs.

    404 when WebSockets are not among ``--transports``; 403 for an origin that the rules above
    refuse. Requests without an ``Origin`` (non-browser clients) pass.
    """

    def __init__(
        self,
        endpoint: Any,
        enabled: bool,
        origins: frozenset[str],
        proxies: TrustedProxies,
    ) -> None:
        self.endpoint = endpoint
        self.enabled = enabled
        self.origins = origins
        self.proxies = proxies

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status, text = 0, ""
        if not self.enabled:
            status, text = 404, "WebSockets transport not supported by this end point type"
        elif self.origins:
            origin = scope_header(scope, b"origin")
            if origin is not None and not origin_allowed(origin, self.origins):
                status, text = 403, "Origin not allowed"
        elif cross_site_with_cookies(scope, self.proxies):
            status, text = 403, "Cross-origin WebSocket with cookies not allowed"
        if not status:
            await self.endpoint(scope, receive, send)
            return
        first = await receive()
        if first["type"] == "websocket.connect":
            await reject(scope, send, status, text)
