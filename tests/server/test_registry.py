"""The connection registry of a node: a connection token starts one connection, once. On a
real uvicorn in process, over long polling."""

from __future__ import annotations

import httpx

from backplane import Hub
from server.app import create_app
from server.settings import Settings
from tests.waiting import until

from .util import serve_app


class EchoHub(Hub):
    async def echo(self, x: object) -> object:
        return x


async def test_an_ended_connection_token_starts_nothing_again() -> None:
    app = create_app({"/hub": EchoHub}, Settings(token_secret="secret"))
    registry = app.state.hubplane.registry
    async with serve_app(app) as host, httpx.AsyncClient(trust_env=False) as http:
        base = f"http://{host}/hub"
        token = (await http.post(f"{base}/negotiate?negotiateVersion=1")).json()["connectionToken"]
        assert token.startswith("h1.")
        assert (await http.get(base, params={"id": token})).status_code == 200
        hello = b'{"protocol":"json","version":1}\x1e'
        assert (await http.post(base, params={"id": token}, content=hello)).status_code == 200
        assert (await http.delete(base, params={"id": token})).status_code == 202
        # The DELETE answers before the connection is torn down; wait until it has ended.
        await until(lambda: registry.ended_recently(token), 5.0, "the connection to end")
        # Replayed within its freshness window: refused, not a second connection.
        assert (await http.get(base, params={"id": token})).status_code == 404
