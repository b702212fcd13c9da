"""The JSON hub protocol (name ``json``, version 1): UTF-8 JSON objects, each ending in 0x1E.

Parsing is order-independent, skips unknown properties and ignores unknown message types.
Writing is compact, with the keys in the order the reference server writes them
(``type`` first) and optional keys omitted rather than written as null.

Payload values: bytes are written as base64 text (as .NET does), datetimes as ISO 8601 text
(naive ones as UTC), dataclasses as objects; NaN and infinities become null (orjson's
behaviour; JSON has no such numbers). Unencodable values raise TypeError.

Normalisation on parse (so a message parses equal from JSON and MessagePack):
empty ``headers`` and empty ``streamIds`` become None, and an empty ``invocationId`` on an
Invocation becomes None (a non-blocking call).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from enum import Enum
from typing import Any

import orjson

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

__all__ = ["JSON_PROTOCOL", "JsonHubProtocol"]

_RS = b"\x1e"
_PING_BYTES = b'{"type":6}\x1e'
_EMPTY_ARGS: tuple[Any, ...] = ()  # written as []
_DUMPS_OPTIONS = orjson.OPT_NAIVE_UTC
_dumps = orjson.dumps
_loads = orjson.loads


def _default(obj: Any) -> Any:
    """orjson fallback: bytes as base64 text (like .NET), sets as arrays."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, Enum):  # pragma: no cover - orjson serialises enums natively
        return obj.value
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# ---------------------------------------------------------------------------------------
# Parsing helpers. Each raises ProtocolError with a message close to the reference server's.


def _required_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if type(value) is not str:
        if value is None:
            raise ProtocolError(f"Missing required property '{key}'.")
        raise ProtocolError(f"Expected '{key}' to be of type String.")
    return value


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise ProtocolError(f"Expected '{key}' to be of type String.")


def _headers(obj: dict[str, Any]) -> Headers | None:
    headers = obj.get("headers")
    if not headers:
        if headers is None or type(headers) is dict:
            return None
        raise ProtocolError("Expected 'headers' to be of type Object.")
    if type(headers) is not dict:
        raise ProtocolError("Expected 'headers' to be of type Object.")
    for value in headers.values():
        if type(value) is not str:
            raise ProtocolError("Expected header values to be of type String.")
    return headers


def _arguments(obj: dict[str, Any]) -> list[Any]:
    args = obj.get("arguments")
    if type(args) is not list:
        if args is None and "arguments" not in obj:
            raise ProtocolError("Missing required property 'arguments'.")
        raise ProtocolError("Expected 'arguments' to be of type Array.")
    return args


def _stream_ids(obj: dict[str, Any]) -> list[str] | None:
    ids = obj.get("streamIds")
    if ids is None:
        return None
    if type(ids) is not list:
        raise ProtocolError("Expected 'streamIds' to be of type Array.")
    if not ids:
        return None
    for item in ids:
        if type(item) is not str:
            raise ProtocolError("Expected 'streamIds' items to be of type String.")
    return ids


def _sequence_id(obj: dict[str, Any]) -> int:
    value = obj.get("sequenceId")
    if type(value) is not int:
        if value is None:
            raise ProtocolError("Missing required property 'sequenceId'.")
        raise ProtocolError("Expected 'sequenceId' to be of type Integer.")
    return value


def _parse_invocation(obj: dict[str, Any]) -> HubMessage:
    # Fast path for what clients send nearly always; anything else takes the checks below.
    target = obj.get("target")
    arguments = obj.get("arguments")
    invocation_id = obj.get("invocationId")
    if (
        type(target) is str
        and type(arguments) is list
        and (invocation_id is None or type(invocation_id) is str)
        and "streamIds" not in obj
        and "headers" not in obj
    ):
        return InvocationMessage(target, arguments, invocation_id or None)
    target = _required_str(obj, "target")
    arguments = _arguments(obj)
    invocation_id = _optional_str(obj, "invocationId") or None
    return InvocationMessage(target, arguments, invocation_id, _stream_ids(obj), _headers(obj))


def _parse_stream_invocation(obj: dict[str, Any]) -> HubMessage:
    invocation_id = _required_str(obj, "invocationId")
    target = _required_str(obj, "target")
    arguments = _arguments(obj)
    return StreamInvocationMessage(
        invocation_id, target, arguments, _stream_ids(obj), _headers(obj)
    )


def _parse_stream_item(obj: dict[str, Any]) -> HubMessage:
    invocation_id = _required_str(obj, "invocationId")
    if "item" not in obj:
        raise ProtocolError("Missing required property 'item'.")
    return StreamItemMessage(invocation_id, obj["item"], _headers(obj))


def _parse_completion(obj: dict[str, Any]) -> HubMessage:
    invocation_id = _required_str(obj, "invocationId")
    error = _optional_str(obj, "error")
    headers = _headers(obj)
    if "result" in obj:
        if error is not None:
            raise ProtocolError("The 'error' and 'result' properties are mutually exclusive.")
        return CompletionMessage(invocation_id, None, obj["result"], True, headers)
    return CompletionMessage(invocation_id, error, None, False, headers)


def _parse_cancel(obj: dict[str, Any]) -> HubMessage:
    return CancelInvocationMessage(_required_str(obj, "invocationId"), _headers(obj))


def _parse_ping(obj: dict[str, Any]) -> HubMessage:
    return PING_MESSAGE


def _parse_close(obj: dict[str, Any]) -> HubMessage:
    error = _optional_str(obj, "error")
    allow = obj.get("allowReconnect")
    if allow is None:
        return CloseMessage(error, False)
    if type(allow) is not bool:
        raise ProtocolError("Expected 'allowReconnect' to be of type Boolean.")
    return CloseMessage(error, allow)


def _parse_ack(obj: dict[str, Any]) -> HubMessage:
    return AckMessage(_sequence_id(obj))


def _parse_sequence(obj: dict[str, Any]) -> HubMessage:
    return SequenceMessage(_sequence_id(obj))


_PARSERS: dict[int, Callable[[dict[str, Any]], HubMessage]] = {
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


def _parse_one(raw: bytes | memoryview) -> HubMessage | None:
    """One JSON message without its separator; None for an unknown message type."""
    try:
        obj = _loads(raw)
    except Exception as exc:  # orjson.JSONDecodeError (invalid JSON or UTF-8), RecursionError
        raise ProtocolError(f"Invalid JSON hub message: {exc}") from None
    if type(obj) is not dict:
        raise ProtocolError("A JSON hub message must be an object.")
    message_type = obj.get("type")
    if type(message_type) is not int:
        if message_type is None:
            raise ProtocolError("Missing required property 'type'.")
        raise ProtocolError("Expected 'type' to be of type Integer.")
    parser = _PARSERS.get(message_type)
    if parser is None:
        return None  # unknown message types are ignored, as the reference implementations do
    return parser(obj)


# ---------------------------------------------------------------------------------------
# Writing: each function returns the dict to serialise, keys in reference-server order.


def _write_invocation(m: Any) -> dict[str, Any]:
    headers = m.headers
    invocation_id = m.invocation_id
    stream_ids = m.stream_ids
    if not headers and not stream_ids:
        if invocation_id:
            return {
                "type": INVOCATION,
                "invocationId": invocation_id,
                "target": m.target,
                "arguments": m.arguments or _EMPTY_ARGS,
            }
        return {"type": INVOCATION, "target": m.target, "arguments": m.arguments or _EMPTY_ARGS}
    d: dict[str, Any] = {"type": INVOCATION}
    if headers:
        d["headers"] = headers
    if invocation_id:
        d["invocationId"] = invocation_id
    d["target"] = m.target
    d["arguments"] = m.arguments or _EMPTY_ARGS
    if stream_ids:
        d["streamIds"] = stream_ids
    return d


def _write_stream_invocation(m: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": STREAM_INVOCATION}
    if m.headers:
        d["headers"] = m.headers
    d["invocationId"] = m.invocation_id
    d["target"] = m.target
    d["arguments"] = m.arguments or _EMPTY_ARGS
    if m.stream_ids:
        d["streamIds"] = m.stream_ids
    return d


def _write_stream_item(m: Any) -> dict[str, Any]:
    if m.headers:
        return {
            "type": STREAM_ITEM,
            "headers": m.headers,
            "invocationId": m.invocation_id,
            "item": m.item,
        }
    return {"type": STREAM_ITEM, "invocationId": m.invocation_id, "item": m.item}


def _write_completion(m: Any) -> dict[str, Any]:
    if m.headers is None and not m.error:  # the usual reply: one dict, built at once
        if m.has_result:
            return {"type": COMPLETION, "invocationId": m.invocation_id, "result": m.result}
        return {"type": COMPLETION, "invocationId": m.invocation_id}
    d: dict[str, Any] = {"type": COMPLETION}
    if m.headers:
        d["headers"] = m.headers
    d["invocationId"] = m.invocation_id
    error = m.error
    if error:  # never an empty error: JS would read it as success
        d["error"] = error
    elif m.has_result:
        d["result"] = m.result
    return d


def _write_cancel(m: Any) -> dict[str, Any]:
    if m.headers:
        return {"type": CANCEL_INVOCATION, "headers": m.headers, "invocationId": m.invocation_id}
    return {"type": CANCEL_INVOCATION, "invocationId": m.invocation_id}


def _write_close(m: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": CLOSE}
    if m.error is not None:
        d["error"] = m.error
    if m.allow_reconnect:
        d["allowReconnect"] = True
    return d


def _write_ack(m: Any) -> dict[str, Any]:
    return {"type": ACK, "sequenceId": m.sequence_id}


def _write_sequence(m: Any) -> dict[str, Any]:
    return {"type": SEQUENCE, "sequenceId": m.sequence_id}


_WRITERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    InvocationMessage: _write_invocation,
    StreamInvocationMessage: _write_stream_invocation,
    StreamItemMessage: _write_stream_item,
    CompletionMessage: _write_completion,
    CancelInvocationMessage: _write_cancel,
    CloseMessage: _write_close,
    AckMessage: _write_ack,
    SequenceMessage: _write_sequence,
}


def _writer_for(message: HubMessage) -> Callable[[Any], dict[str, Any]] | None:
    for cls, writer in _WRITERS.items():
        if isinstance(message, cls):
            return writer
    return None


class JsonHubProtocol:
    """The ``json`` hub protocol: text transfer format, messages separated by 0x1E."""

    name: str = "json"
    version: int = 1
    transfer_format: str = "Text"
    is_binary: bool = False

    def parse_messages(
        self, data: bytes | bytearray | memoryview, max_message_size: int | None = None
    ) -> tuple[list[HubMessage], int]:
        """Parse every complete message in ``data``: (messages, bytes consumed)."""
        buf = data if type(data) is bytes else bytes(data)
        size = len(buf)
        if (
            size
            and buf[-1] == 0x1E
            and buf.find(0x1E) == size - 1
            and (max_message_size is None or size - 1 <= max_message_size)
        ):
            # One whole message, the usual frame: no slicing loop.
            message = _parse_one(buf[:-1])  # (a copy of a short message beats a view)
            return ([message] if message is not None else []), size
        view = memoryview(buf)
        messages: list[HubMessage] = []
        start = 0
        find = buf.find
        while True:
            end = find(0x1E, start)
            if end < 0:
                break
            if max_message_size is not None and end - start > max_message_size:
                raise MessageTooLargeError(
                    f"The message is larger than the maximum of {max_message_size} bytes."
                )
            message = _parse_one(view[start:end])
            if message is not None:
                messages.append(message)
            start = end + 1
        if max_message_size is not None and len(buf) - start > max_message_size:
            raise MessageTooLargeError(
                f"The message is larger than the maximum of {max_message_size} bytes."
            )
        return messages, start

    def write_message(self, message: HubMessage) -> bytes:
        """The JSON text of ``message`` followed by 0x1E."""
        writer = _WRITERS.get(type(message))
        if writer is None:
            if isinstance(message, PingMessage):
                return _PING_BYTES
            writer = _writer_for(message)
            if writer is None:
                raise TypeError(f"Cannot write {type(message).__name__} with the JSON protocol.")
        return _dumps(writer(message), default=_default, option=_DUMPS_OPTIONS) + _RS

    def __repr__(self) -> str:
        return "JsonHubProtocol()"


JSON_PROTOCOL = JsonHubProtocol()
"""The shared instance of the JSON hub protocol."""
