"""A stand-in connection for unit tests of the lifetime layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backplane.hub import User
from backplane.lifetime.base import SerializedMessage
from backplane.protocol import CompletionMessage, HubMessage, HubProtocol


class FakeConnection:
    """Just what the lifetime layer needs of a connection (the ClientConnection Protocol)."""

    def __init__(self, connection_id: str, user: str | None = None) -> None:
        self.connection_id = connection_id
        self.user = User(user) if user is not None else None
        self.protocol: HubProtocol | None = None
        self.closing = False
        self.groups: set[str] | frozenset[str] = frozenset()
        self.results: dict[str, Callable[[CompletionMessage], None]] = {}
        self.written: list[Any] = []
        self.aborted = False

    def write_serialized(self, message: SerializedMessage) -> None:
        self.written.append(message)

    def write_message(self, message: HubMessage) -> None:
        self.written.append(message)

    def abort(self) -> None:
        self.aborted = True

    def close(self, error: str | None = None, allow_reconnect: bool = False) -> None:
        self.aborted = True
        self.close_error = error

    def add_group(self, group: str) -> None:
        self.groups = {*self.groups, group}

    def discard_group(self, group: str) -> None:
        self.groups = set(self.groups) - {group}

    def clear_groups(self) -> None:
        self.groups = frozenset()
