"""What reaches the logs: a refused token is one line, a failed fan-out encode is logged once,
payloads never, and tokens are masked in any app built with ``create_app``."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

import httpx
import jwt
import msgpack
import pytest
import websockets

from backplane import Hub
from backplane.protocol import InvocationMessage
from backplane.protocol.messagepack import write_varint
from server import Settings, create_app
from server.jwt_auth import JwtAuthenticator
from tests.hub.helpers import Client, make_handler

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


async def test_a_failed_fan_out_encode_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    handler = make_handler(Plain)
    clients = [Client(handler, f"c{i}", "json") for i in range(5)]
    for client in clients:
        await client.handshake()
    caplog.clear()
    await clients[0].send(InvocationMessage("Unsendable", [], "1"))
    assert [m.invocation_id for m in await clients[0].wait_messages(1)] == ["1"]  # type: ignore[attr-defined]
    errors = records_at_warning(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].getMessage() == (
        "cannot encode InvocationMessage 'Msg' for json clients, who do not get it: "
        "TypeError: Type is not JSON serializable: Opaque"
    )
    assert PAYLOAD not in caplog.text


async def test_payloads_stay_out_of_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    handler = make_handler(Plain)
    c = Client(handler, "c1", "json")
    await c.handshake()
    caplog.clear()
    await c.send(InvocationMessage("Unanswerable", [], "1"))  # its Completion cannot be encoded
    for _ in range(100):
        if c.conn.closing:
            break
        await asyncio.sleep(0.01)
    assert c.conn.closing
    assert "cannot encode a CompletionMessage" in caplog.text
    # A MessagePack frame with data after its message: msgpack's error carries what it read.
    m = Client(handler, "c2", "messagepack")
    await m.handshake()
    body = msgpack.packb([1, {}, "2", "Echo", [PAYLOAD]]) + msgpack.packb(PAYLOAD)
    await m.conn.receive(write_varint(len(body)) + body, True)
    assert m.conn.closing
    assert "received extra data" in caplog.text
    assert PAYLOAD not in caplog.text


def test_create_app_masks_tokens_whatever_the_logging_setup() -> None:
    create_app({"/hubs/plain": Plain}, settings=Settings())
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # a handler of the application's, unguarded
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    access = logging.getLogger("uvicorn.access")  # uvicorn's config may stop its propagation
    levels = (root.level, access.level)
    for logger in (root, access):
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/hubs/plain?id=TOKEN-ONE&access_token=TOKEN-TWO",
            "1.1",
            200,
        )
        try:
            raise ValueError("Authorization: Bearer TOKEN-THREE")
        except ValueError:
            logging.getLogger("hubplane.server").exception("a request failed")
    finally:
        for logger, level in zip((root, access), levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    text = out.getvalue()
    assert "/hubs/plain?id=***&access_token=***" in text
    assert "Bearer ***" in text
    assert "TOKEN-" not in text
