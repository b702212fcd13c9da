"""A caller of hubplane's REST API as the published API describes it: httpx, a JWT made with
PyJWT (HS256, the access key, ``aud`` the URL as the Management SDK signs it: no port, with
the query), JSON bodies and the Management SDK's MessagePack bodies."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt
import msgpack

from tests.conftest import LOOPBACK
from tests.e2e.raw import varint

KEY = "hubplane-rest-test-key-0123456789abcdef"  # an access key: 32 characters or more
HUB = "cluster"  # the REST name of tests.e2e.cluster_hubs.ClusterHub at /hubs/cluster
VERSION = "2022-06-01"


def name(value: str) -> str:
    """A user id, group or connection id as one path segment."""
    return quote(value, safe="")


def token(url: str, key: str = KEY, ttl: float = 60.0, **claims: Any) -> str:
    """A bearer token for ``url``."""
    body: dict[str, Any] = {"aud": url, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(body, key, algorithm="HS256")


def msgpack_body(
    target: str, arguments: list[Any], protocols: tuple[str, ...] = ("json", "messagepack")
) -> bytes:
    """The Management SDK's binary body: protocol name -> the framed invocation."""
    payloads: dict[str, bytes] = {}
    if "json" in protocols:
        text = json.dumps({"type": 1, "target": target, "arguments": arguments})
        payloads["json"] = text.encode() + b"\x1e"
    if "messagepack" in protocols:
        packed = msgpack.packb([1, {}, None, target, arguments, []], use_bin_type=True)
        payloads["messagepack"] = varint(len(packed)) + packed
    return msgpack.packb(payloads, use_bin_type=True)


class Rest:
    """REST calls to one node (keep-alive), each with a fresh token for its URL."""

    def __init__(self, port: int, hub: str = HUB, key: str = KEY) -> None:
        self.port = port
        self.hub = hub
        self.key = key
        self.http = httpx.Client(
            base_url=f"http://{LOOPBACK}:{port}", timeout=15.0, trust_env=False
        )

    def close(self) -> None:
        self.http.close()

    def path(self, rest: str, legacy: bool = False) -> str:
        base = f"/api/v1/hubs/{self.hub}" if legacy else f"/api/hubs/{self.hub}"
        return base + ("/" + rest if rest else "")

    def request(
        self,
        method: str,
        rest: str = "",
        *,
        version: str | None = VERSION,
        legacy: bool = False,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        body: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """``method /api/hubs/{hub}/{rest}`` (or the legacy path) with a token for its URL."""
        path = self.path(rest, legacy)
        query: list[tuple[str, Any]] = []
        if version is not None and not legacy:
            query.append(("api-version", version))
        if params:
            query.extend(params.items() if isinstance(params, dict) else params)
        url = path + ("?" + urlencode(query) if query else "")
        all_headers = dict(headers or {})
        if auth is None:
            auth = "Bearer " + token(f"http://{LOOPBACK}{url}", self.key)
        if auth:
            all_headers["authorization"] = auth
        if body is not None:
            content = json.dumps(body).encode()
            content_type = content_type or "application/json"
        if content_type:
            all_headers["content-type"] = content_type
        return self.http.request(method, url, content=content, headers=all_headers)

    def send(self, rest: str, target: str, *args: Any, **kw: Any) -> httpx.Response:
        """``POST .../{rest}`` with ``{"Target", "Arguments"}`` as the SDK writes it; 202."""
        response = self.request(
            "POST", rest, body={"Target": target, "Arguments": list(args)}, **kw
        )
        assert response.status_code == 202, (response.status_code, response.text)
        return response

    def barrier(self, token_value: str) -> None:
        """A broadcast published after this node's earlier publishes (see expect_delivery)."""
        self.send(":send", "Receive", "barrier", token_value)
