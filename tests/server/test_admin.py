"""The read-only admin API (/_hubplane/) on a real uvicorn with real WebSocket clients."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from starlette.requests import HTTPConnection

from backplane import Hub, User
from server import Settings, create_app

from .util import recv_json, serve_app, ws_json_client

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Rooms(Hub):
    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def my_id(self) -> str:
        return self.context.connection_id


class Other(Hub):
    async def my_id(self) -> str:
        return self.context.connection_id


async def by_query(request: HTTPConnection) -> User | str | None:
    return request.query_params.get("user")


class Client:
    """A JSON-protocol WebSocket client that calls hub methods one at a time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    @classmethod
    async def connect(cls, url: str) -> Client:
        return cls(await ws_json_client(url))

    async def call(self, target: str, *args: Any) -> Any:
        self.next_id += 1
        invocation = str(self.next_id)
        message = {"type": 1, "invocationId": invocation, "target": target, "arguments": args}
        await self.ws.send(orjson.dumps(message).decode() + "\x1e")
        for _ in range(20):
            for m in await recv_json(self.ws):
                if m.get("type") == 3 and m.get("invocationId") == invocation:
                    assert "error" not in m, m
                    return m.get("result")
        raise AssertionError(f"no completion for {target}")

    async def close(self) -> None:
        await self.ws.close()


def app_with(token: str | None = TOKEN, **hubs: type[Hub[Any]]) -> Any:
    served = {f"/hubs/{name}": hub for name, hub in hubs.items()} or {"/hubs/rooms": Rooms}
    return create_app(served, settings=Settings(admin_token=token), authenticate=by_query)


async def wait_until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_every_request_needs_the_token() -> None:
    async with serve_app(app_with()) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        for path in (
            "/_hubplane/hubs",
            "/_hubplane/nodes",
            "/_hubplane/connections",
            "/_hubplane/groups/g",
            "/_hubplane/users/u",
            "/_hubplane/connections/x/groups",
            "/_hubplane/nothing-here",
        ):
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": TOKEN},
                {"X-Token": TOKEN},
            ):
                r = await http.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in r.text
        r = await http.get("/_hubplane/hubs", headers=AUTH)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        # the scheme is case-insensitive, as in RFC 7235
        r = await http.get("/_hubplane/hubs", headers={"Authorization": f"bearer {TOKEN}"})
        assert r.status_code == 200
        r = await http.get("/_hubplane/nothing-here", headers=AUTH)
        assert r.status_code == 404 and "error" in r.json()
        # read-only: no other method
        assert (await http.post("/_hubplane/hubs", headers=AUTH)).status_code == 405


async def test_disabled_without_a_token() -> None:
    async with (
        serve_app(app_with(token=None)) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        for path in ("/_hubplane/hubs", "/_hubplane/nodes", "/_hubplane/connections"):
            for headers in ({}, AUTH, {"Authorization": "Bearer anything"}):
                assert (await http.get(path, headers=headers)).status_code == 404
        # the hubs themselves are served as usual
        r = await http.post("/hubs/rooms/negotiate?negotiateVersion=1")
        assert r.status_code == 200
    # an empty token is no token
    async with (
        serve_app(app_with(token="")) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        for headers in ({}, AUTH):
            assert (await http.get("/_hubplane/hubs", headers=headers)).status_code == 404


async def test_presence_answers_after_clients_connect_and_join() -> None:
    app = app_with(rooms=Rooms, other=Other)
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
    ):

        async def get(path: str, **params: str) -> Any:
            r = await http.get(path, params=params)
            assert r.status_code == 200, (path, params, r.status_code, r.text)
            return r.json()

        # nothing connected yet
        hubs = await get("/_hubplane/hubs")
        assert hubs == {
            "hubs": [
                {"path": "/hubs/rooms", "connections": 0},
                {"path": "/hubs/other", "connections": 0},
            ]
        }
        ann1 = await Client.connect(f"ws://{host}/hubs/rooms?user=ann")
        ann2 = await Client.connect(f"ws://{host}/hubs/rooms?user=ann")
        bob = await Client.connect(f"ws://{host}/hubs/rooms?user=bob")
        anon = await Client.connect(f"ws://{host}/hubs/rooms")
        elsewhere = await Client.connect(f"ws://{host}/hubs/other?user=ann")
        clients = [ann1, ann2, bob, anon, elsewhere]
        try:
            a1, a2, b, n, e = [await c.call("my_id") for c in clients]
            await ann1.call("join", "red")
            await ann1.call("join", "blue/green")  # a '/' in a group name
            await bob.call("join", "red")
            await anon.call("join", "blue/green")
            await ann2.call("join", "gone")
            await ann2.call("leave", "gone")

            hubs = await get("/_hubplane/hubs")
            assert hubs["hubs"] == [
                {"path": "/hubs/rooms", "connections": 4},
                {"path": "/hubs/other", "connections": 1},
            ]
            connections = await get("/_hubplane/connections", hub="/hubs/rooms")
            assert connections == {
                "hub": "/hubs/rooms",
                "count": 4,
                "connections": sorted([a1, a2, b, n]),
                "next": None,
            }
            # the hub path may be given without its leading slash or with a trailing one
            assert (await get("/_hubplane/connections", hub="hubs/other/"))["connections"] == [e]

            red = await get("/_hubplane/groups/red", hub="/hubs/rooms")
            assert red == {"hub": "/hubs/rooms", "group": "red", "connections": sorted([a1, b])}
            slashed = await get(
                "/_hubplane/groups/" + quote("blue/green", safe=""), hub="/hubs/rooms"
            )
            assert slashed["group"] == "blue/green"
            assert slashed["connections"] == sorted([a1, n])
            assert (await get("/_hubplane/groups/gone", hub="/hubs/rooms"))["connections"] == []
            # groups are per hub
            assert (await get("/_hubplane/groups/red", hub="/hubs/other"))["connections"] == []

            ann = await get("/_hubplane/users/ann", hub="/hubs/rooms")
            assert ann == {
                "hub": "/hubs/rooms",
                "user": "ann",
                "online": True,
                "connections": sorted([a1, a2]),
            }
            assert (await get("/_hubplane/users/ann", hub="/hubs/other"))["connections"] == [e]
            nobody = await get("/_hubplane/users/" + quote("zoë z", safe=""), hub="/hubs/rooms")
            assert nobody == {
                "hub": "/hubs/rooms",
                "user": "zoë z",
                "online": False,
                "connections": [],
            }

            groups = await get(f"/_hubplane/connections/{a1}/groups", hub="/hubs/rooms")
            assert groups == {
                "hub": "/hubs/rooms",
                "connection": a1,
                "groups": ["blue/green", "red"],
            }
            assert (await get(f"/_hubplane/connections/{a2}/groups", hub="/hubs/rooms"))[
                "groups"
            ] == []
            assert (await get("/_hubplane/connections/unknown/groups", hub="/hubs/rooms"))[
                "groups"
            ] == []

            nodes = await get("/_hubplane/nodes", hub="/hubs/rooms")
            assert nodes["hub"] == "/hubs/rooms"
            assert len(nodes["nodes"]) == 1
            node = nodes["nodes"][0]
            assert set(node) >= {"id", "connections", "started", "last_heartbeat"}
            assert node["connections"] == 4
            assert node["started"] <= node["last_heartbeat"] <= time.time() + 1
            assert isinstance(node["id"], str) and node["id"]
        finally:
            for c in clients:
                await c.close()

        # disconnections are seen (the server notices the close asynchronously)
        async def emptied() -> bool:
            hubs = await get("/_hubplane/hubs")
            return all(h["connections"] == 0 for h in hubs["hubs"])

        assert await wait_until(emptied)
        assert (await get("/_hubplane/users/ann", hub="/hubs/rooms"))["online"] is False
        assert (await get("/_hubplane/groups/red", hub="/hubs/rooms"))["connections"] == []


async def test_hub_is_optional_with_one_hub() -> None:
    async with (
        serve_app(app_with()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
    ):
        client = await Client.connect(f"ws://{host}/hubs/rooms?user=cy")
        try:
            cid = await client.call("my_id")
            await client.call("join", "g")
            r = await http.get("/_hubplane/connections")
            assert r.json() == {
                "hub": "/hubs/rooms",
                "count": 1,
                "connections": [cid],
                "next": None,
            }
            assert (await http.get("/_hubplane/groups/g")).json()["connections"] == [cid]
            assert (await http.get("/_hubplane/users/cy")).json()["online"] is True
            assert (await http.get(f"/_hubplane/connections/{cid}/groups")).json()["groups"] == [
                "g"
            ]
            assert (await http.get("/_hubplane/nodes")).json()["nodes"][0]["connections"] == 1
        finally:
            await client.close()


async def test_bad_hub_is_a_client_error_and_the_server_stays_up() -> None:
    async with (
        serve_app(app_with(rooms=Rooms, other=Other)) as host,
        httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
    ):
        client = await Client.connect(f"ws://{host}/hubs/rooms?user=dee")
        try:
            for path in (
                "/_hubplane/nodes",
                "/_hubplane/connections",
                "/_hubplane/groups/g",
                "/_hubplane/users/dee",
                "/_hubplane/connections/x/groups",
            ):
                r = await http.get(path, params={"hub": "/hubs/nope"})
                assert r.status_code == 404, (path, r.status_code)
                body = r.json()
                assert "error" in body and body["hubs"] == ["/hubs/rooms", "/hubs/other"]
                # two hubs and no ?hub=: the request is ambiguous
                r = await http.get(path)
                assert r.status_code == 400, (path, r.status_code)
                assert "hub" in r.json()["error"]
                for odd in ("", "/", "%00", "../../etc", "x" * 5000):
                    r = await http.get(path, params={"hub": odd})
                    assert 400 <= r.status_code < 500, (path, odd, r.status_code)
            # the node still serves hubs and the admin API
            assert await client.call("my_id")
            r = await http.get("/_hubplane/users/dee", params={"hub": "/hubs/rooms"})
            assert r.status_code == 200 and r.json()["online"] is True
            r = await http.post("/hubs/rooms/negotiate?negotiateVersion=1")
            assert r.status_code == 200
        finally:
            await client.close()


async def test_a_failing_presence_gives_503_and_the_server_stays_up() -> None:
    app = app_with()
    hubplane = app.state.hubplane
    presence = hubplane.hub_context("/hubs/rooms").presence

    async def broken(*args: Any) -> Any:
        raise ConnectionError("backplane unreachable")

    original = presence.connections
    presence.connections = broken
    try:
        async with (
            serve_app(app) as host,
            httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
        ):
            r = await http.get("/_hubplane/connections")
            assert r.status_code == 503 and "error" in r.json()
            assert "unreachable" not in r.text  # details stay in the server log
            assert (await http.get("/_hubplane/hubs")).status_code == 200
    finally:
        presence.connections = original


def test_token_from_the_environment() -> None:
    from server.settings import build_settings

    environ = {**os.environ, "HUBPLANE_ADMIN_TOKEN": "from-env"}
    assert build_settings(environ=environ).admin_token == "from-env"


async def test_backplane_state_on_a_single_node() -> None:
    async with (
        serve_app(app_with()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
    ):
        r = await http.get("/_hubplane/backplane")
        assert r.status_code == 200
        assert r.json() == {"mode": "memory", "connected": True}
        assert (
            await http.get("/_hubplane/backplane", headers={"Authorization": ""})
        ).status_code == 401


async def test_connections_come_in_pages() -> None:
    async with (
        serve_app(app_with()) as host,
        httpx.AsyncClient(base_url=f"http://{host}", headers=AUTH) as http,
    ):
        clients = [await Client.connect(f"ws://{host}/hubs/rooms") for _ in range(5)]
        try:
            ids = sorted([await c.call("my_id") for c in clients])
            pages: list[list[str]] = []
            cursor: str | None = None
            for _ in range(5):
                params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
                body = (await http.get("/_hubplane/connections", params=params)).json()
                assert body["count"] == 5
                pages.append(body["connections"])
                cursor = body["next"]
                if cursor is None:
                    break
            assert pages == [ids[0:2], ids[2:4], ids[4:]]
            last = await http.get("/_hubplane/connections", params={"cursor": ids[-1]})
            assert last.json()["connections"] == [] and last.json()["next"] is None
            for bad in ("0", "x", "10001", "-1"):
                r = await http.get("/_hubplane/connections", params={"limit": bad})
                assert r.status_code == 400 and "limit" in r.json()["error"]
        finally:
            for c in clients:
                await c.close()
