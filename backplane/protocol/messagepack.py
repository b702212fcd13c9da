"""The MessagePack hub protocol (name ``messagepack``, version 1).

Every message is a VarInt length prefix followed by one MessagePack array whose first element
is the message type. Parsing accepts the JS client's short layouts (5-element Invocation and
StreamInvocation, 2-element Close) and extra trailing elements on every type. Writing follows
the reference server: headers map on types 1-5, six-element Invocation/StreamInvocation,
three-element Close.

Values: str <-> str family, bytes <-> bin family, datetime <-> timestamp extension -1 (naive
datetimes are written as UTC; parsed timestamps are aware UTC datetimes), dataclasses are
written as maps of their fields, enums as their values, UUIDs and sets as str and arrays.
Unknown extension types parse as ``msgpack.ExtType``.

Normalisation on parse (the same as the JSON protocol): an empty headers map and empty
stream ids become None, and an empty or nil invocation id on an Invocation becomes None.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any

import msgpack

from backplane.errors import MessageTooLargeError, ProtocolError
from backplane.protocol.messages import (
    ACK,
    CANCEL_INVOCATION,
    CLOSE,
    COMPLETION,
    INVOCATION,
    PING,
    PING_MESSAGE,
    SEQUENCE,
    STREAM_INVOCATION,
    STREAM_ITEM,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    Headers,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

__all__ = ["MESSAGEPACK_PROTOCOL", "MessagePackHubProtocol", "read_varint", "write_varint"]

_ERROR_RESULT = 1
_VOID_RESULT = 2
_NON_VOID_RESULT = 3

_MAX_LENGTH = 0x7FFFFFFF
_PING_BYTES = b"\x02\x91\x06"
_EMPTY_MAP: dict[str, str] = {}  # packed as 0x80; never mutated
_EMPTY_ARRAY: tuple[Any, ...] = ()  # packed as 0x90
_SHORT_PREFIX = [bytes((n,)) for n in range(0x80)]
_UTC = datetime.UTC
_unpackb = msgpack.unpackb


def write_varint(value: int) -> bytes:
    """The VarInt encoding (7 bits per byte, least significant group first) of ``value``."""
    if value < 0 or value > _MAX_LENGTH:
        raise ValueError("A length prefix must be between 0 and 2**31 - 1.")
    if value < 0x80:
        return _SHORT_PREFIX[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """(length, offset after the prefix) of the VarInt at ``offset``; None when incomplete."""
    n = len(data)
    length = 0
    shift = 0
    pos = offset
    while pos < n:
        byte = data[pos]
        pos += 1
        if shift == 28 and byte > 7:
            raise ProtocolError("Messages bigger than 2GB are not supported.")
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, pos
        shift += 7
    return None


def _default(obj: Any) -> Any:
    """msgpack fallback for values it does not pack natively."""
    if isinstance(obj, datetime.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=_UTC)
        return msgpack.Timestamp.from_datetime(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not MessagePack serializable")


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, datetime=True, default=_default)


class _PackerPerThread(threading.local):
    """One reusable Packer per thread (a Packer keeps an internal buffer)."""

    def __init__(self) -> None:
        self.pack: Callable[[Any], bytes] = _new_packer().pack


# ---------------------------------------------------------------------------------------
# Parsing helpers


def _headers(value: Any) -> Headers | None:
    if type(value) is not dict:
        raise ProtocolError("Expected the headers to be a map.")
    if not value:
        return None
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            raise ProtocolError("Expected the headers to map strings to strings.")
    return value


def _invocation_id(value: Any) -> str:
    if type(value) is not str:
        raise ProtocolError("Expected the invocation id to be a string.")
    return value


def _target(value: Any) -> str:
    if type(value) is not str:
        raise ProtocolError("Expected the target to be a string.")
    return value


def _arguments(value: Any) -> list[Any]:
    if type(value) is not list:
        raise ProtocolError("Expected the arguments to be an array.")
    return value


def _stream_ids(items: list[Any]) -> list[str] | None:
    if len(items) < 6:
        return None
    ids = items[5]
    if ids is None:
        return None
    if type(ids) is not list:
        raise ProtocolError("Expected the stream ids to be an array.")
    if not ids:
        return None
    for item in ids:
        if type(item) is not str:
            raise ProtocolError("Expected the stream ids to be strings.")
    return ids


def _check_length(items: list[Any], minimum: int, name: str) -> None:
    if len(items) < minimum:
        raise ProtocolError(f"Invalid payload for {name} message.")


def _parse_invocation(items: list[Any]) -> HubMessage:
    _check_length(items, 5, "Invocation")
    headers = _headers(items[1])
    invocation_id = items[2]
    if invocation_id is not None and type(invocation_id) is not str:
        raise ProtocolError("Expected the invocation id to be a string or nil.")
    return InvocationMessage(
        _target(items[3]),
        _arguments(items[4]),
        invocation_id or None,
        _stream_ids(items),
        headers,
    )


def _parse_stream_invocation(items: list[Any]) -> HubMessage:
    _check_length(items, 5, "StreamInvocation")
    headers = _headers(items[1])
    return StreamInvocationMessage(
        _invocation_id(items[2]),
        _target(items[3]),
        _arguments(items[4]),
        _stream_ids(items),
        headers,
    )


def _parse_stream_item(items: list[Any]) -> HubMessage:
    _check_length(items, 4, "StreamItem")
    headers = _headers(items[1])
    return StreamItemMessage(_invocation_id(items[2]), items[3], headers)


def _parse_completion(items: list[Any]) -> HubMessage:
    _check_length(items, 4, "Completion")
    headers = _headers(items[1])
    invocation_id = _invocation_id(items[2])
    kind = items[3]
    if type(kind) is not int:
        raise ProtocolError("Invalid invocation result kind.")
    if kind == _VOID_RESULT:
        return CompletionMessage(invocation_id, None, None, False, headers)
    if kind == _NON_VOID_RESULT:
        _check_length(items, 5, "Completion")
        return CompletionMessage(invocation_id, None, items[4], True, headers)
    if kind == _ERROR_RESULT:
        _check_length(items, 5, "Completion")
        error = items[4]
        if type(error) is not str:
            raise ProtocolError("Expected the completion error to be a string.")
        return CompletionMessage(invocation_id, error, None, False, headers)
    raise ProtocolError("Invalid invocation result kind.")


def _parse_cancel(items: list[Any]) -> HubMessage:
    _check_length(items, 3, "CancelInvocation")
    headers = _headers(items[1])
    return CancelInvocationMessage(_invocation_id(items[2]), headers)


def _parse_ping(items: list[Any]) -> HubMessage:
    return PING_MESSAGE


def _parse_close(items: list[Any]) -> HubMessage:
    _check_length(items, 2, "Close")
    error = items[1]
    if error is not None and type(error) is not str:
        raise ProtocolError("Expected the close error to be a string or nil.")
    allow_reconnect = False
    if len(items) > 2:
        allow = items[2]
        if allow is not None:
            if type(allow) is not bool:
                raise ProtocolError("Expected allowReconnect to be a boolean.")
            allow_reconnect = allow
    return CloseMessage(error, allow_reconnect)


def _sequence_id(items: list[Any], name: str) -> int:
    _check_length(items, 2, name)
    value = items[1]
    if type(value) is not int:
        raise ProtocolError("Expected the sequence id to be an integer.")
    return value


def _parse_ack(items: list[Any]) -> HubMessage:
    return AckMessage(_sequence_id(items, "Ack"))


def _parse_sequence(items: list[Any]) -> HubMessage:
    return SequenceMessage(_sequence_id(items, "Sequence"))


_PARSERS: dict[int, Callable[[list[Any]], HubMessage]] = {
    INVOCATION: _parse_invocation,
    STREAM_ITEM: _parse_stream_item,
    COMPLETION: _parse_completion,
    STREAM_INVOCATION: _parse_stream_invocation,
    CANCEL_INVOCATION: _parse_cancel,
    PING: _parse_ping,
    CLOSE: _parse_close,
    ACK: _parse_ack,
    SEQUENCE: _parse_sequence,
}


def _parse_one(body: memoryview) -> HubMessage | None:
    """One message body (without its prefix); None for an unknown message type."""
    if not body:
        raise ProtocolError("Invalid payload: empty message.")
    try:
        items = _unpackb(body, raw=False, timestamp=3, strict_map_key=False)
    except Exception as exc:  # msgpack errors, ValueError, TypeError (unhashable keys), ...
        # The exception's text, not its repr: msgpack's ExtraData carries the data it read.
        raise ProtocolError(
            f"Invalid MessagePack hub message: {type(exc).__name__}: {exc}"
        ) from None
    if type(items) is not list or not items:
        raise ProtocolError("Invalid payload: a hub message must be a non-empty array.")
    message_type = items[0]
    if type(message_type) is not int:
        raise ProtocolError("Invalid payload: the message type must be an integer.")
    parser = _PARSERS.get(message_type)
    if parser is None:
        return None  # unknown message types are ignored
    return parser(items)


# ---------------------------------------------------------------------------------------
# Writing: each function returns the array to pack, in the reference server's layout.


def _write_invocation(m: Any) -> list[Any]:
    return [
        INVOCATION,
        m.headers or _EMPTY_MAP,
        m.invocation_id or None,
        m.target,
        m.arguments or _EMPTY_ARRAY,
        m.stream_ids or _EMPTY_ARRAY,
    ]


def _write_stream_invocation(m: Any) -> list[Any]:
    return [
        STREAM_INVOCATION,
        m.headers or _EMPTY_MAP,
        m.invocation_id,
        m.target,
        m.arguments or _EMPTY_ARRAY,
        m.stream_ids or _EMPTY_ARRAY,
    ]


def _write_stream_item(m: Any) -> list[Any]:
    return [STREAM_ITEM, m.headers or _EMPTY_MAP, m.invocation_id, m.item]


def _write_completion(m: Any) -> list[Any]:
    error = m.error
    if error:  # never an empty error: JS would read it as success
        return [COMPLETION, m.headers or _EMPTY_MAP, m.invocation_id, _ERROR_RESULT, error]
    if m.has_result:
        return [COMPLETION, m.headers or _EMPTY_MAP, m.invocation_id, _NON_VOID_RESULT, m.result]
    return [COMPLETION, m.headers or _EMPTY_MAP, m.invocation_id, _VOID_RESULT]


def _write_cancel(m: Any) -> list[Any]:
    return [CANCEL_INVOCATION, m.headers or _EMPTY_MAP, m.invocation_id]


def _write_close(m: Any) -> list[Any]:
    return [CLOSE, m.error, bool(m.allow_reconnect)]


def _write_ack(m: Any) -> list[Any]:
    return [ACK, m.sequence_id]


def _write_sequence(m: Any) -> list[Any]:
    return [SEQUENCE, m.sequence_id]


_WRITERS: dict[type, Callable[[Any], list[Any]]] = {
    InvocationMessage: _write_invocation,
    StreamInvocationMessage: _write_stream_invocation,
    StreamItemMessage: _write_stream_item,
    CompletionMessage: _write_completion,
    CancelInvocationMessage: _write_cancel,
    CloseMessage: _write_close,
    AckMessage: _write_ack,
    SequenceMessage: _write_sequence,
}


def _writer_for(message: HubMessage) -> Callable[[Any], list[Any]] | None:
    for cls, writer in _WRITERS.items():
        if isinstance(message, cls):
            return writer
    return None


class MessagePackHubProtocol:
    """The ``messagepack`` hub protocol: binary transfer format, VarInt-prefixed arrays."""

    name: str = "messagepack"
    version: int = 1
    transfer_format: str = "Binary"
    is_binary: bool = True

    def __init__(self) -> None:
        self._local = _PackerPerThread()

    def parse_messages(
        self, data: bytes | bytearray | memoryview, max_message_size: int | None = None
    ) -> tuple[list[HubMessage], int]:
        """Parse every complete message in ``data``: (messages, bytes consumed)."""
        buf = data if type(data) is bytes else bytes(data)
        view = memoryview(buf)
        n = len(buf)
        messages: list[HubMessage] = []
        pos = 0
        while pos < n:
            first = buf[pos]
            if first < 0x80:
                length = first
                start = pos + 1
            else:
                prefix = read_varint(buf, pos)
                if prefix is None:
                    break
                length, start = prefix
            if max_message_size is not None and length > max_message_size:
                raise MessageTooLargeError(
                    f"The message is larger than the maximum of {max_message_size} bytes."
                )
            end = start + length
            if end > n:
                break
            message = _parse_one(view[start:end])
            if message is not None:
                messages.append(message)
            pos = end
        return messages, pos

    def write_message(self, message: HubMessage) -> bytes:
        """The VarInt length prefix and MessagePack array of ``message``."""
        writer = _WRITERS.get(type(message))
        if writer is None:
            if isinstance(message, PingMessage):
                return _PING_BYTES
            writer = _writer_for(message)
            if writer is None:
                raise TypeError(
                    f"Cannot write {type(message).__name__} with the MessagePack protocol."
                )
        try:
            body = self._local.pack(writer(message))
        except (ValueError, OverflowError) as exc:  # e.g. an int outside the 64-bit range
            raise TypeError(f"Cannot encode the message as MessagePack: {exc}") from exc
        length = len(body)
        if length < 0x80:
            return _SHORT_PREFIX[length] + body
        return write_varint(length) + body

    def __repr__(self) -> str:
        return "MessagePackHubProtocol()"


MESSAGEPACK_PROTOCOL = MessagePackHubProtocol()
"""The shared instance of the MessagePack hub protocol."""
