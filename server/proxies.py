"""Reverse proxies trusted with ``X-Forwarded-*`` headers (``--forwarded-allow-ips``).

Behind a proxy, the ``Host`` a request arrives with may be the proxy's upstream name rather
than the one the client used; the proxy sends the client's in ``X-Forwarded-Host`` (and its
scheme in ``X-Forwarded-Proto``). Those headers count only from the proxies listed: anyone else
could send them. The WebSocket origin check (``origins.py``) and the REST API's audience check
(``rest/auth.py``) ask here.

Which peer sent the request: uvicorn replaces the ASGI ``client`` by the ``X-Forwarded-For``
address for the proxies it trusts, so the proxy's own address is gone by the time the app runs.
``hubplane serve`` notes the TCP peer in the scope first (:class:`RawPeer`, outside uvicorn's
proxy handling); an app served otherwise falls back on ``client`` (run uvicorn with
``proxy_headers=False``, or trust the same proxies in both places).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

#: The scope key holding the address of the TCP peer, as the server saw it.
PEER = "hubplane.peer"


class TrustedProxies:
    """The peers whose forwarded headers count."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.everyone = "*" in networks
        self.networks = [ipaddress.ip_network(n) for n in networks if n != "*"]

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def __contains__(self, address: str | None) -> bool:
        if self.everyone:
            return True
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def peer(scope: Any) -> str | None:
    """The address of the TCP peer of a request (before uvicorn's proxy headers)."""
    address = scope.get(PEER)
    if address is not None:
        return str(address)
    client = scope.get("client")
    return str(client[0]) if client else None


def via_trusted_proxy(scope: Any, proxies: TrustedProxies) -> bool:
    """True when the request came from one of ``proxies``."""
    return bool(proxies) and peer(scope) in proxies


def forwarded(scope: Any, name: bytes, proxies: TrustedProxies) -> str | None:
    """The first value of a forwarded header (``x-forwarded-host``...) from a trusted proxy."""
    if not via_trusted_proxy(scope, proxies):
        return None
    for key, value in scope["headers"]:
        if key == name:
            first = value.decode("latin-1").split(",", 1)[0].strip()
            return first or None
    return None


class RawPeer:
    """Notes the TCP peer in the scope, before uvicorn's proxy headers replace ``client``.

    ``hubplane serve`` puts it outside everything uvicorn wraps around the app.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if client:
            scope[PEER] = client[0]
        await self.app(scope, receive, send)
