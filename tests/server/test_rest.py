"""The REST API on one in-memory node (uvicorn in the test's loop, raw WebSocket clients):
settings, hub names, the pure helpers, names with any character, user groups, listing and
``:invoke``. The cluster behaviour is in tests/e2e/test_rest_api*.py."""

from __future__ import annotations

import asyncio
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
from server.rest import hs256
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


def test_hs256_verification_agrees_with_pyjwt() -> None:
    claims = {"aud": "http://h/api", "exp": 2_000_000_000, "n": "ü"}
    good = jwt.encode(claims, KEY, algorithm="HS256")
    assert hs256.verify(good, KEY.encode()) == claims
    head, body, signature = good.split(".")
    other = jwt.encode({**claims, "n": "x"}, KEY, algorithm="HS256").split(".")[1]
    refused = {
        f"{head}.{other}.{signature}": "signature",  # payload swapped
        f"{head}.{body}.{signature[:-2]}AA": "signature",
        jwt.encode(claims, "another key of at least 32 bytes!", algorithm="HS256"): "signature",
        jwt.encode(claims, None, algorithm="none"): "HS256",
        jwt.encode(claims, KEY * 2, algorithm="HS512"): "HS256",
        "abc": "not a JWT",
        f"{head}.{body}": "not a JWT",
        f"{head}.{body}!.{signature}": "not a JWT",
        f"e30.{body}.{signature}": "HS256",  # header {}
        f"bm90IGpzb24.{body}.{signature}": "header is not JSON",
    }
    for token, reason in refused.items():
        with pytest.raises(hs256.TokenError, match=reason):
            hs256.verify(token, KEY.encode())


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


async def test_names_with_any_character_and_user_groups() -> None:
    user, group = "ann/o'neil ü", "room #1/ä"
    async with one_node() as node:
        ws1, c1 = await node.client(user)
        enc_user, enc_group = quote(user, safe=""), quote(group, safe="")
        assert (await node.call("HEAD", f"users/{enc_user}")).status_code == 200
        # ttl=0: the current connection only
        r = await node.call("PUT", f"users/{enc_user}/groups/{enc_group}", params={"ttl": "0"})
        assert r.status_code == 200
        assert (await node.call("HEAD", f"users/{enc_user}/groups/{enc_group}")).status_code == 200
        ws2, c2 = await node.client(user)
        r = await node.call("GET", f"groups/{enc_group}/connections")
        assert [v["connectionId"] for v in r.json()["value"]] == [c1]
        # with a ttl, later connections join too, until it passes
        r = await node.call("PUT", f"users/{enc_user}/groups/{enc_group}", params={"ttl": "1"})
        assert r.status_code == 200
        ws3, c3 = await node.client(user)
        r = await node.call("GET", f"groups/{enc_group}/connections")
        assert {v["connectionId"] for v in r.json()["value"]} == {c1, c2, c3}
        assert {v["userId"] for v in r.json()["value"]} == {user}
        await asyncio.sleep(1.1)
        ws4, c4 = await node.client(user)
        r = await node.call("GET", f"groups/{enc_group}/connections")
        assert c4 not in {v["connectionId"] for v in r.json()["value"]}
        # a send reaches the members
        body = {"target": "Hi", "arguments": [group]}
        assert (await node.call("POST", f"groups/{enc_group}/:send", json=body)).status_code == 202
        for ws in (ws1, ws2, ws3):
            assert (await recv_json(ws))[0]["arguments"] == [group]
        # no ttl: a year; then removal: 204, and the connections leave
        assert (await node.call("PUT", f"users/{enc_user}/groups/{enc_group}")).status_code == 200
        assert (
            await node.call("DELETE", f"users/{enc_user}/groups/{enc_group}")
        ).status_code == 204
        assert (await node.call("HEAD", f"users/{enc_user}/groups/{enc_group}")).status_code == 404
        assert (await node.call("HEAD", f"groups/{enc_group}")).status_code == 404
        assert (
            await node.call("PUT", f"users/{enc_user}/groups/x", params={"ttl": "-1"})
        ).status_code == 400
        assert (
            await node.call("PUT", f"users/{enc_user}/groups/x", params={"ttl": "1.5"})
        ).status_code == 400
        assert (await node.call("PUT", f"users/{enc_user}/groups/x")).status_code == 200
        assert (await node.call("DELETE", f"users/{enc_user}/groups")).status_code == 204
        assert (await node.call("HEAD", f"users/{enc_user}/groups/x")).status_code == 404
        for ws in (ws1, ws2, ws3, ws4):
            await ws.close()


async def test_listing_pages_through_a_group() -> None:
    async with one_node() as node:
        clients = [await node.client(f"u{i}") for i in range(5)]
        for _, cid in clients:
            assert (await node.call("PUT", f"groups/g/connections/{cid}")).status_code == 200
        seen: list[dict[str, Any]] = []
        r = await node.call("GET", "groups/g/connections", params={"maxpagesize": "2"})
        pages = 0
        while True:
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["value"]) <= 2
            seen.extend(page["value"])
            pages += 1
            if not page["nextLink"]:
                break
            link = httpx.URL(page["nextLink"])
            token = jwt.encode(
                {"aud": f"http://127.0.0.1{link.path}", "exp": time.time() + 60},
                KEY,
                algorithm="HS256",
            )
            r = await node.http.get(page["nextLink"], headers={"authorization": "Bearer " + token})
        assert pages == 3
        assert sorted(v["connectionId"] for v in seen) == sorted(cid for _, cid in clients)
        assert {v["userId"] for v in seen} == {f"u{i}" for i in range(5)}
        bad = await node.call("GET", "groups/g/connections", params={"maxpagesize": "0"})
        assert bad.status_code == 400
        bad = await node.call("GET", "groups/g/connections", params={"continuationToken": "%%%"})
        assert bad.status_code == 400
        for ws, _ in clients:
            await ws.close()


async def test_invoke_answers_with_the_client_result() -> None:
    async with one_node(client_result_timeout=1.0) as node:
        ws, cid = await node.client()

        async def answer(result: Any = None, error: str | None = None) -> None:
            [invocation] = await recv_json(ws)
            assert invocation["target"] == "Ask" and invocation["arguments"] == [1, "two"]
            reply: dict[str, Any] = {"type": 3, "invocationId": invocation["invocationId"]}
            reply.update({"error": error} if error else {"result": result})
            await ws.send(orjson.dumps(reply).decode() + "\x1e")

        body = {"Target": "Ask", "Arguments": [1, "two"]}
        answering = asyncio.ensure_future(answer({"sum": 3}))
        r = await node.call("POST", f"connections/{cid}/:invoke", json=body)
        await answering
        assert (r.status_code, r.json()) == (200, {"sum": 3})
        answering = asyncio.ensure_future(answer(error="no such handler"))
        r = await node.call("POST", f"connections/{cid}/:invoke", json=body)
        await answering
        assert r.status_code == 400 and "no such handler" in r.json()["error"]
        r = await node.call("POST", "connections/nobody/:invoke", json=body)
        assert r.status_code == 404
        r = await node.call("POST", f"connections/{cid}/:invoke", json=body)  # never answered
        assert r.status_code == 504
        await recv_json(ws)  # the unanswered invocation
        old = await node.call("POST", f"connections/{cid}/:invoke", version="2022-06-01", json=body)
        assert old.status_code == 400
        # still serving
        assert (await node.call("HEAD", f"connections/{cid}")).status_code == 200
        await ws.close()
