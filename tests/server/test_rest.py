"""The REST API on one in-memory node (uvicorn in the test's loop, raw WebSocket clients):
settings, hub names, the pure helpers, names with any character, user groups, listing and
``:invoke``. The cluster behaviour is in tests/e2e/test_rest_api*.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import orjson
import pytest
from starlette.requests import HTTPConnection

from backplane import Hub
from server.app import create_app
from server.errors import SettingsError
from server.rest.auth import normalize_audience
from server.rest.errors import RestError
from server.rest.routes import VERSIONED, match
from server.settings import Settings, settings_from_cli
from tests.server.util import recv_json, serve_app, ws_json_client

KEY = "k" * 40


class Chat(Hub):
    async def whoami(self) -> str:
        return self.context.connection_id


async def by_query(request: HTTPConnection) -> str | None:
    return request.query_params.get("user") or None


# --------------------------------------------------------------------------- pure parts


def test_settings_take_the_key_from_flags_or_the_environment() -> None:
    assert settings_from_cli([], {"HUBPLANE_REST_ACCESS_KEY": KEY}).rest_access_key == KEY
    assert settings_from_cli(["--rest-access-key", KEY], {}).rest_access_key == KEY
    with pytest.raises(SettingsError, match="at least 32"):
        settings_from_cli(["--rest-access-key", "short"], {})
    proxies = settings_from_cli(["--rest-trusted-proxies", "10.0.0.1, 192.168.0.0/16"], {})
    assert proxies.rest_trusted_proxies == ("10.0.0.1/32", "192.168.0.0/16")
    with pytest.raises(SettingsError, match="rest-trusted-proxies"):
        settings_from_cli(["--rest-trusted-proxies", "proxy.local"], {})


def test_hub_names_that_collide_are_refused_only_with_the_api() -> None:
    hubs = {"/a/chat": Chat, "/b/Chat": Chat}
    with pytest.raises(SettingsError, match="'chat'"):
        create_app(hubs, settings=Settings(rest_access_key=KEY).validate())
    create_app(hubs, settings=Settings().validate())  # no REST API, no names


def test_audiences_are_normalized() -> None:
    assert normalize_audience("HTTPS://Host.Example:8443/api/hubs/a%20b/:send?api-version=x") == (
        "https://host.example/api/hubs/a b/:send"
    )
    assert normalize_audience("http://[::1]:80/api") == "http://::1/api"
    assert normalize_audience("not a url") is None


def test_routes_match_names_and_refuse_empty_ones() -> None:
    route, params = match(VERSIONED, ["users", "a/b", ":send"])
    assert params == {"user": "a/b"} and "POST" in route.methods
    assert match(VERSIONED, [":SEND"])[0].pattern == (":send",)
    with pytest.raises(RestError) as missing:
        match(VERSIONED, ["users", "", ":send"])
    assert missing.value.status == 400
    with pytest.raises(RestError) as unknown:
        match(VERSIONED, ["users"])
    assert unknown.value.status == 404


# --------------------------------------------------------------------------- one node


class Node:
    """One in-memory node and a REST caller."""

    def __init__(self, address: str, http: httpx.AsyncClient) -> None:
        self.address = address
        self.http = http

    async def call(self, method: str, path: str, version: str = "2024-12-01", **kw: Any) -> Any:
        url = f"/api/hubs/chat/{path}"
        auth = "Bearer " + jwt.encode(
            {"aud": f"http://127.0.0.1{url}", "exp": time.time() + 60}, KEY, algorithm="HS256"
        )
        params = {"api-version": version, **kw.pop("params", {})}
        return await self.http.request(
            method, url, params=params, headers={"authorization": auth}, **kw
        )

    async def client(self, user: str | None = None) -> tuple[Any, str]:
        query = f"?user={quote(user)}" if user else ""
        ws = await ws_json_client(f"ws://{self.address}/hubs/chat{query}")
        await ws.send(
            orjson.dumps(
                {"type": 1, "invocationId": "w", "target": "Whoami", "arguments": []}
            ).decode()
            + "\x1e"
        )
        [completion] = await recv_json(ws)
        return ws, completion["result"]


@contextlib.asynccontextmanager
async def one_node(**settings: Any) -> AsyncIterator[Node]:
    config = Settings(rest_access_key=KEY, **settings).validate()
    app = create_app({"/hubs/chat": Chat}, settings=config, authenticate=by_query)
    async with serve_app(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", trust_env=False) as http:
            yield Node(address, http)


async def test_without_a_key_there_is_no_api() -> None:
    app = create_app({"/hubs/chat": Chat}, settings=Settings().validate())
    async with serve_app(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", trust_env=False) as http:
            assert (await http.head("/api/health")).status_code == 404
