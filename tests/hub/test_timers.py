"""A connection's deadlines on their own: no connection, no clock but the one given."""

from __future__ import annotations

import asyncio
import time

import pytest

from backplane import Hub, HubConnection
from backplane.deadlines import Deadlines
from backplane.hub import User
from backplane.options import HubOptions
from backplane.protocol import PingMessage
from backplane.timers import CoarseClock, ConnectionTimers

from .helpers import Client, make_handler


class Idle(Hub):
    async def ping(self) -> str:
        return "pong"


def test_handshake_deadline_runs_from_creation() -> None:
    timers = ConnectionTimers(100.0, keepalive_interval=15.0)
    assert not timers.handshake_expired(114.9, 15.0)
    assert timers.handshake_expired(115.0, 15.0)


def test_pings_are_due_once_per_interval() -> None:
    timers = ConnectionTimers(0.0, keepalive_interval=15.0)
    assert not timers.ping_due(14.0, 15.0)
    assert timers.ping_due(15.0, 15.0)
    assert not timers.ping_due(16.0, 15.0)  # the next one is 15 s later
    assert timers.ping_due(30.0, 15.0)


def test_client_timeout_starts_with_the_first_ping_and_resets_when_heard() -> None:
    clock = CoarseClock(0.0)
    timers = ConnectionTimers(0.0, keepalive_interval=15.0, clock=clock)
    assert not timers.client_timed_out(100.0, 30.0)  # no ping from the client yet
    timers.ping_seen = True
    clock.now = 90.0  # the time of the next tick, as the handler sets it
    timers.heard = True  # heard before that tick: stamped with it
    assert not timers.client_timed_out(119.0, 30.0)
    assert timers.client_timed_out(120.0, 30.0)
    clock.now = 50.0  # a stamp never goes back
    timers.heard = True
    assert timers.client_timed_out(120.0, 30.0)


def test_the_next_look_is_the_next_ping_the_client_timeout_or_the_expiry() -> None:
    options = HubOptions(keepalive_interval=15.0, client_timeout=30.0)
    clock = CoarseClock(0.0)
    timers = ConnectionTimers(0.0, keepalive_interval=15.0, clock=clock)
    assert timers.next_due(1.0, options, pinging=True) == 15.0  # the first ping
    assert timers.next_due(1.0, options, pinging=False) == 31.0  # a look for a first ping
    timers.ping_seen = True
    clock.now = 2.0
    timers.heard = True
    options.keepalive_interval = options.client_timeout = 10.0
    assert timers.next_due(3.0, options, pinging=True) == 12.0  # heard at 2, timeout 10
    timers.expires_at = time.time() + 1.0
    assert 3.5 < timers.next_due(3.0, options, pinging=True) <= 4.0


def test_deadlines_hand_out_items_at_the_first_tick_after_their_time() -> None:
    deadlines: Deadlines[str] = Deadlines(resolution=1.0)
    deadlines.soon("new")  # the next tick, whatever its time
    deadlines.schedule("a", 5.2, now=0.0)  # met at the tick of 6.0
    deadlines.schedule("b", 1.0, now=0.0)
    deadlines.schedule("c", -3.0, now=0.0)  # due already: the next tick
    assert len(deadlines) == 4
    assert sorted(deadlines.pop_due(-100.0)) == ["c", "new"]
    assert deadlines.pop_due(0.9) == []
    assert deadlines.pop_due(1.0) == ["b"]
    assert deadlines.pop_due(5.5) == []
    assert deadlines.pop_due(6.0) == ["a"]
    assert len(deadlines) == 0 and deadlines.pop_due(100.0) == []


def test_token_expiry_comes_from_the_exp_claim() -> None:
    timers = ConnectionTimers(0.0, keepalive_interval=15.0)
    assert not timers.token_expired()
    timers.expires_at = User("u", {"exp": int(time.time()) - 1}).expires_at
    assert timers.token_expired()
    timers.expires_at = User("u", {"exp": int(time.time()) + 60}).expires_at
    assert not timers.token_expired()
    assert User("u", {"exp": True}).expires_at is None  # a bool is not a time
    assert User("u").expires_at is None


async def test_a_tick_looks_only_at_the_connections_that_are_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 idle connections: looked at when new, then once per keep-alive interval (their
    ping), not at every tick; one still handshaking, every tick until its deadline."""
    handler = make_handler(Idle, keepalive_interval=15.0, handshake_timeout=5.0)
    clients = [Client(handler, f"c{i}") for i in range(1000)]
    for client in clients:
        await client.handshake()
    silent = Client(handler, "silent")  # never handshakes
    looked: list[str] = []
    tick = HubConnection.tick

    def counting(self: HubConnection, now: float) -> float | None:
        looked.append(self.connection_id)
        return tick(self, now)

    monkeypatch.setattr(HubConnection, "tick", counting)
    start = asyncio.get_running_loop().time()
    handler.tick(start)
    assert len(looked) == 1001  # every connection once, at its first tick
    per_tick = []
    for second in range(1, 17):
        looked.clear()
        handler.tick(start + second)
        per_tick.append(len(looked))
    # The silent one until its handshake has failed (5 s, and the tick after, where it is
    # found closed); nobody else until the ping (at the first tick after 15 s), then all.
    assert per_tick[:6] == [1] * 6, per_tick
    assert per_tick[6:14] == [0] * 8, per_tick
    assert per_tick[14:] in ([1000, 0], [0, 1000]), per_tick
    assert silent.conn.closing
    assert all(PingMessage() in c.messages() for c in clients[:10])
