"""Hub protocol message types (SignalR message types 1 to 9) and the handshake messages.

Plain ``__slots__`` classes: they are built on the hot path, so no validation happens here;
the codecs validate what they parse.
"""

from __future__ import annotations

from typing import Any, ClassVar

INVOCATION = 1
STREAM_ITEM = 2
COMPLETION = 3
STREAM_INVOCATION = 4
CANCEL_INVOCATION = 5
PING = 6
CLOSE = 7
ACK = 8
SEQUENCE = 9

Headers = dict[str, str]


class HubMessage:
    """Base class of all hub messages."""

    __slots__ = ()
    type: ClassVar[int] = 0

    def _fields(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()  # type: ignore[attr-defined,unused-ignore]

    def __hash__(self) -> int:  # pragma: no cover - messages are not used as keys
        return hash(type(self))

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({body})"


class InvocationMessage(HubMessage):
    """Type 1: call ``target`` with ``arguments``; ``invocation_id`` None means no reply wanted."""

    __slots__ = ("invocation_id", "target", "arguments", "stream_ids", "headers")
    type = INVOCATION

    def __init__(
        self,
        target: str,
        arguments: list[Any],
        invocation_id: str | None = None,
        stream_ids: list[str] | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.invocation_id = invocation_id
        self.target = target
        self.arguments = arguments
        self.stream_ids = stream_ids
        self.headers = headers


class StreamInvocationMessage(HubMessage):
    """Type 4: call a streaming ``target``; results come back as stream items."""

    __slots__ = ("invocation_id", "target", "arguments", "stream_ids", "headers")
    type = STREAM_INVOCATION

    def __init__(
        self,
        invocation_id: str,
        target: str,
        arguments: list[Any],
        stream_ids: list[str] | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.invocation_id = invocation_id
        self.target = target
        self.arguments = arguments
        self.stream_ids = stream_ids
        self.headers = headers


class StreamItemMessage(HubMessage):
    """Type 2: one item of a stream."""

    __slots__ = ("invocation_id", "item", "headers")
    type = STREAM_ITEM

    def __init__(self, invocation_id: str, item: Any, headers: Headers | None = None) -> None:
        self.invocation_id = invocation_id
        self.item = item
        self.headers = headers


class CompletionMessage(HubMessage):
    """Type 3: the end of an invocation or stream: a result, an error, or neither (void)."""

    __slots__ = ("invocation_id", "error", "result", "has_result", "headers")
    type = COMPLETION

    def __init__(
        self,
        invocation_id: str,
        error: str | None = None,
        result: Any = None,
        has_result: bool = False,
        headers: Headers | None = None,
    ) -> None:
        self.invocation_id = invocation_id
        self.error = error
        self.result = result
        self.has_result = has_result
        self.headers = headers

    @classmethod
    def with_result(cls, invocation_id: str, result: Any) -> CompletionMessage:
        """A completion that carries ``result`` (which may be None)."""
        return cls(invocation_id, None, result, True)

    @classmethod
    def with_error(cls, invocation_id: str, error: str) -> CompletionMessage:
        """A completion that carries an error text."""
        return cls(invocation_id, error)

    @classmethod
    def empty(cls, invocation_id: str) -> CompletionMessage:
        """A void completion."""
        return cls(invocation_id)


class CancelInvocationMessage(HubMessage):
    """Type 5: cancel the stream (or invocation) with ``invocation_id``."""

    __slots__ = ("invocation_id", "headers")
    type = CANCEL_INVOCATION

    def __init__(self, invocation_id: str, headers: Headers | None = None) -> None:
        self.invocation_id = invocation_id
        self.headers = headers


class PingMessage(HubMessage):
    """Type 6: keep-alive."""

    __slots__ = ()
    type = PING


class CloseMessage(HubMessage):
    """Type 7: the sender is closing the connection, optionally with an error."""

    __slots__ = ("error", "allow_reconnect")
    type = CLOSE

    def __init__(self, error: str | None = None, allow_reconnect: bool = False) -> None:
        self.error = error
        self.allow_reconnect = allow_reconnect


class AckMessage(HubMessage):
    """Type 8: stateful reconnect, the highest sequence id processed."""

    __slots__ = ("sequence_id",)
    type = ACK

    def __init__(self, sequence_id: int) -> None:
        self.sequence_id = sequence_id


class SequenceMessage(HubMessage):
    """Type 9: stateful reconnect, the sequence id of the next message sent."""

    __slots__ = ("sequence_id",)
    type = SEQUENCE

    def __init__(self, sequence_id: int) -> None:
        self.sequence_id = sequence_id


PING_MESSAGE = PingMessage()


class HandshakeRequest:
    """The client's first message: which protocol and version it speaks."""

    __slots__ = ("protocol", "version")

    def __init__(self, protocol: str, version: int) -> None:
        self.protocol = protocol
        self.version = version

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HandshakeRequest)
            and other.protocol == self.protocol
            and other.version == self.version
        )

    def __repr__(self) -> str:
        return f"HandshakeRequest(protocol={self.protocol!r}, version={self.version!r})"
