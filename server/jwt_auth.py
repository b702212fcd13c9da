"""A built-in JWT bearer authenticator (PyJWT).

The token comes from ``Authorization: Bearer <jwt>`` or, as browsers must send it for
WebSockets and Server-Sent Events, from the ``access_token`` query parameter. It is verified
with ``--jwt-secret`` (HS256) or ``--jwt-public-key`` (a PEM file: RS256 or ES256), and
``--jwt-issuer`` / ``--jwt-audience`` when set; expired tokens are refused. The user id is
the ``sub`` claim (or what ``user_id`` returns), the roles come from ``role`` or ``roles``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from backplane import User

from .auth import AuthenticationFailed as AuthenticationFailed  # re-exported
from .auth import bearer_token
from .errors import SettingsError

logger = logging.getLogger("hubplane.auth")

UserIdProvider = Callable[[Mapping[str, Any]], str | None]


def roles_of(claims: Mapping[str, Any]) -> list[str]:
    """Roles from the ``role`` and ``roles`` claims (a string or a list of strings each)."""
    roles: list[str] = []
    for name in ("role", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            roles.extend(r for r in value.replace(",", " ").split() if r)
        elif isinstance(value, list | tuple):
            roles.extend(str(r) for r in value)
    return roles


class JwtAuthenticator:
    """``authenticate(request) -> User | None`` for JWT bearer tokens."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | bytes | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        user_id: UserIdProvider | None = None,
        leeway: float = 0.0,
    ) -> None:
        if (secret is None) == (public_key is None):
            raise SettingsError("give exactly one of a JWT secret and a JWT public key")
        if secret is not None:
            self.key: Any = secret
            self.algorithms = ["HS256"]
        else:
            self.key = public_key
            self.algorithms = ["RS256", "ES256"]
        self.issuer = issuer
        self.audience = audience
        self.user_id = user_id
        self.leeway = leeway
        if audience is None:
            logger.warning(
                "JWT audience not checked (no --jwt-audience): tokens issued for other "
                "services with the same key are accepted"
            )

    @classmethod
    def from_public_key_file(cls, path: str, **kwargs: Any) -> JwtAuthenticator:
        """An authenticator verifying with the PEM public key in ``path``."""
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"cannot read the JWT public key {path!r}: {exc}") from exc
        return cls(public_key=pem, **kwargs)

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; raises AuthenticationFailed."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                # Tokens must expire, as ASP.NET Core's JWT bearer handler requires.
                options={"verify_aud": self.audience is not None, "require": ["exp"]},
            )
        except jwt.InvalidTokenError as exc:
            # The reason is logged once by the caller (never the token); the client gets 401.
            raise AuthenticationFailed(f"invalid JWT: {exc}") from None
        return claims

    async def __call__(self, request: HTTPConnection) -> User | None:
        token = bearer_token(request)
        if token is None:
            return None
        claims = self.decode(token)
        uid = self.user_id(claims) if self.user_id is not None else claims.get("sub")
        if uid is None:
            raise AuthenticationFailed("the token names no user (no 'sub' claim)")
        return User(str(uid), claims=claims, roles=roles_of(claims))
