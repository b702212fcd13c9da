"""The JWT authenticator: secrets and public keys, claims, refusals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import HTTPConnection

from server.jwt_auth import AuthenticationFailed, JwtAuthenticator, roles_of


def request(headers: dict[str, str] | None = None, query: str = "") -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return HTTPConnection(
        {"type": "http", "headers": raw, "query_string": query.encode(), "path": "/"}
    )


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "ann", "exp": int(time.time()) + 60, **extra}


async def test_hs256_from_header_or_query() -> None:
    auth = JwtAuthenticator(secret="s" * 32, issuer="me")
    good = jwt.encode(claims(iss="me", roles=["a", "b"], role="c"), "s" * 32, algorithm="HS256")
    user = await auth(request({"Authorization": f"Bearer {good}"}))
    assert user is not None and user.id == "ann" and user.roles == {"a", "b", "c"}
    user = await auth(request(query=f"access_token={good}"))
    assert user is not None and user.claims["iss"] == "me"
    assert await auth(request()) is None
    for bad in (
        jwt.encode(claims(iss="other"), "s" * 32, algorithm="HS256"),
        jwt.encode(claims(iss="me", exp=int(time.time()) - 5), "s" * 32, algorithm="HS256"),
        jwt.encode(claims(iss="me"), "t" * 32, algorithm="HS256"),
        "not-a-jwt",
        jwt.encode({"sub": "ann", "iss": "me"}, "s" * 32, algorithm="HS256"),  # no exp
    ):
        with pytest.raises(AuthenticationFailed):
            await auth(request({"Authorization": f"Bearer {bad}"}))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_public_keys(tmp_path: Path, kind: str) -> None:
    if kind == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algorithm = "RS256"
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        algorithm = "ES256"
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    auth = JwtAuthenticator.from_public_key_file(str(path), audience="hub")
    token = jwt.encode(claims(aud="hub"), key, algorithm=algorithm)
    user = await auth(request({"Authorization": f"Bearer {token}"}))
    assert user is not None and user.id == "ann"
    with pytest.raises(AuthenticationFailed):
        await auth(
            request(
                {"Authorization": f"Bearer {jwt.encode(claims(aud='x'), key, algorithm=algorithm)}"}
            )
        )
    # A token signed with the secret-key algorithm is never accepted by a public key.
    forged = jwt.encode(claims(aud="hub"), "s" * 32, algorithm="HS256")
    with pytest.raises(AuthenticationFailed):
        await auth(request({"Authorization": f"Bearer {forged}"}))


async def test_user_id_provider_and_roles() -> None:
    auth = JwtAuthenticator(secret="k" * 32, user_id=lambda c: c.get("email"))
    token = jwt.encode(claims(email="ann@example.org"), "k" * 32, algorithm="HS256")
    user = await auth(request({"Authorization": f"Bearer {token}"}))
    assert user is not None and user.id == "ann@example.org"
    assert roles_of({"role": "a, b", "roles": ["c"]}) == ["a", "b", "c"]
