"""The local registry both lifetime managers keep their connections, groups and users in."""

from __future__ import annotations

from backplane.lifetime.base import ClientConnection
from backplane.lifetime.registry import Change, ConnectionRegistry, Removal
from tests.lifetime.fakes import FakeConnection


def test_a_fake_connection_is_a_client_connection() -> None:
    connection: ClientConnection = FakeConnection("a")
    assert connection.connection_id == "a"


def test_add_and_remove_track_users() -> None:
    registry = ConnectionRegistry()
    a, b, c = FakeConnection("a", "ann"), FakeConnection("b", "ann"), FakeConnection("c")
    assert registry.add(a) is True  # ann's first connection here
    assert registry.add(b) is False
    assert registry.add(c) is False  # no user
    assert registry.connections == {"a": a, "b": b, "c": c}
    assert registry.users == {"ann": {"a": a, "b": b}}
    assert registry.remove(a) == Removal([], None)  # ann still has b
    assert registry.remove(b) == Removal([], "ann")
    assert registry.users == {}
    assert registry.remove(b) is None  # not registered any more
    assert registry.remove(c) == Removal([], None)
    assert registry.connections == {}


def test_join_and_leave_report_what_changed() -> None:
    registry = ConnectionRegistry()
    a, b = FakeConnection("a"), FakeConnection("b")
    registry.add(a)
    registry.add(b)
    assert registry.join(a, "g") is Change.GROUP  # the group's first local member
    assert registry.join(a, "g") is Change.NONE
    assert registry.join(b, "g") is Change.MEMBER
    assert registry.groups == {"g": {"a": a, "b": b}}
    assert a.groups == {"g"} and b.groups == {"g"}
    assert registry.leave(a, "g") is Change.MEMBER
    assert registry.leave(a, "g") is Change.NONE
    assert not Change.NONE
    assert a.groups == set()
    assert registry.leave(b, "g") is Change.GROUP  # its last local member
    assert registry.groups == {}


def test_remove_leaves_groups_and_names_the_emptied_ones() -> None:
    registry = ConnectionRegistry()
    a, b = FakeConnection("a", "ann"), FakeConnection("b")
    registry.add(a)
    registry.add(b)
    for group in ("solo", "shared"):
        registry.join(a, group)
    registry.join(b, "shared")
    removal = registry.remove(a)
    assert removal is not None
    assert removal.groups == ["solo"] and removal.user == "ann"
    assert registry.groups == {"shared": {"b": b}}
    assert a.groups == frozenset()


def test_the_tables_are_never_rebound() -> None:
    registry = ConnectionRegistry()
    tables = (registry.connections, registry.groups, registry.users)
    a = FakeConnection("a", "ann")
    registry.add(a)
    registry.join(a, "g")
    registry.remove(a)
    assert (registry.connections, registry.groups, registry.users) == tables
    assert all(
        x is y
        for x, y in zip(
            tables, (registry.connections, registry.groups, registry.users), strict=True
        )
    )
