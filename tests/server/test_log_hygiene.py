"""What reaches the logs: a refused token is one line, a failed fan-out encode is logged once,
payloads never, and tokens are masked in any app built with ``create_app``."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import jwt
import pytest
import websockets

from backplane import Hub
from server import Settings, create_app
from server.jwt_auth import JwtAuthenticator

from .util import serve_app

SECRET = "k" * 32
PAYLOAD = "s3cret-payload"


class Opaque:
    """A value no protocol encodes, whose repr is its payload."""

    def __repr__(self) -> str:
        return f"Opaque({PAYLOAD!r})"


class Plain(Hub):
    async def echo(self, value: Any) -> Any:
        return value

    async def unsendable(self) -> Any:
        await self.clients.all.send("Msg", Opaque())

    async def unanswerable(self) -> Any:
        return Opaque()


def records_at_warning(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_refused_jwt_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    auth = JwtAuthenticator(secret=SECRET, audience="hubs")
    app = create_app({"/hubs/plain": Plain}, settings=Settings(), authenticate=auth)
    expired = jwt.encode({"sub": "ann", "aud": "hubs", "exp": int(time.time()) - 60}, SECRET)
    async with (
        serve_app(app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        caplog.clear()
        caplog.set_level(logging.INFO)
        r = await http.post(
            "/hubs/plain/negotiate?negotiateVersion=1",
            headers={"authorization": f"Bearer {expired}"},
        )
        assert r.status_code == 401
        (refusal,) = records_at_warning(caplog)
        assert refusal.levelno == logging.WARNING and refusal.exc_info is None
        assert refusal.getMessage() == (
            "authentication refused at negotiate: invalid JWT: Signature has expired"
        )
        caplog.clear()
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(f"ws://{host}/hubs/plain?access_token={expired}")
        (refusal,) = records_at_warning(caplog)
        assert refusal.exc_info is None and "on a WebSocket upgrade" in refusal.getMessage()
        assert expired not in caplog.text
