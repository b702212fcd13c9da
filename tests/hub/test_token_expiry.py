"""--close-on-token-expiry: a connection is closed (reconnect allowed) when its token expires."""

from __future__ import annotations

import time

import pytest

from backplane import Hub, User, timers
from backplane.protocol import CloseMessage

from .helpers import Client, make_handler


class Plain(Hub):
    async def hello(self) -> str:
        return "hi"


class WallClock:
    """The wall clock that token expiry reads (``time.time`` in ``backplane.timers``), moved
    by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    clock = WallClock()
    monkeypatch.setattr(timers, "time", clock)
    return clock


async def test_closed_at_expiry_with_reconnect_allowed(wall: WallClock) -> None:
    handler = make_handler(Plain, close_on_token_expiry=True)
    soon = Client(handler, "soon", user=User("a", claims={"exp": wall.now + 0.2}))
    later = Client(handler, "later", user=User("b", claims={"exp": wall.now + 3600}))
    anonymous = Client(handler, "anon")
    for c in (soon, later, anonymous):
        await c.handshake()
    loop_now = 0.0
    handler.tick(loop_now)
    assert not soon.conn.closing
    wall.now += 0.25
    handler.tick(loop_now + 1.0)  # the next tick (the ticker runs with the loop's clock)
    assert soon.conn.closing and not later.conn.closing and not anonymous.conn.closing
    (close,) = soon.messages()
    assert isinstance(close, CloseMessage) and close.allow_reconnect and close.error is None


async def test_off_by_default() -> None:
    handler = make_handler(Plain)
    client = Client(handler, "c", user=User("a", claims={"exp": time.time() - 10}))
    await client.handshake()
    handler.tick(0.0)
    assert not client.conn.closing
