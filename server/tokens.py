"""Signed connection tokens: what lets any node check a token without asking the one that minted it.

With ``--token-secret`` (the same on every node) negotiate hands out a token carrying the
connection id, the hub, the negotiate version and the stateful flag, with an HMAC-SHA256 over them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import msgpack

TOKEN_PREFIX = "h1."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenClaims:
    """What a signed connection token says."""

    __slots__ = ("connection_id", "hub_path", "version", "stateful", "issued")

    def __init__(
        self, connection_id: str, hub_path: str, version: int, stateful: bool, issued: float
    ) -> None:
        self.connection_id = connection_id
        self.hub_path = hub_path
        self.version = version
        self.stateful = stateful
        self.issued = issued


class TokenSigner:
    """Mints and checks connection tokens with an HMAC-SHA256 over their contents."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"hubplane connection token\0" + secret.encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def mint(self, connection_id: str, hub_path: str, version: int, stateful: bool) -> str:
        """A token for a new connection."""
        payload = msgpack.packb(
            [connection_id, hub_path, version, stateful, int(time.time() * 1000)]
        )
        return TOKEN_PREFIX + _b64(payload) + "." + _b64(self._mac(payload))

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of a genuine token, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        body, _, mac = token[len(TOKEN_PREFIX) :].partition(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(given, self._mac(payload)):
            return None
        try:
            cid, path, version, stateful, issued = msgpack.unpackb(payload)[:5]
        except Exception:
            return None
        return TokenClaims(str(cid), str(path), int(version), bool(stateful), issued / 1000.0)


def claims_fresh(claims: TokenClaims, max_age: float) -> bool:
    """A token may start a connection only this long after negotiate minted it."""
    return time.time() - claims.issued <= max_age
