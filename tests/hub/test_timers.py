"""A connection's deadlines on their own: no connection, no clock but the one given."""

from __future__ import annotations

import time

from backplane.hub import User
from backplane.timers import ConnectionTimers


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
    timers = ConnectionTimers(0.0, keepalive_interval=15.0)
    assert not timers.client_timed_out(100.0, 30.0)  # no ping from the client yet
    timers.ping_seen = True
    timers.heard = True
    timers.observe(90.0)  # heard during the tick at 90
    assert not timers.client_timed_out(119.0, 30.0)
    timers.observe(119.0)  # nothing heard since: the time stays at 90
    assert timers.client_timed_out(120.0, 30.0)


def test_token_expiry_comes_from_the_exp_claim() -> None:
    timers = ConnectionTimers(0.0, keepalive_interval=15.0)
    assert not timers.token_expired()
    timers.expires_at = User("u", {"exp": int(time.time()) - 1}).expires_at
    assert timers.token_expired()
    timers.expires_at = User("u", {"exp": int(time.time()) + 60}).expires_at
    assert not timers.token_expired()
    assert User("u", {"exp": True}).expires_at is None  # a bool is not a time
    assert User("u").expires_at is None
