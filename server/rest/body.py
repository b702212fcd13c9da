"""The bodies of ``:send`` and ``:invoke``: what to call on the clients, checked before anything
is sent.

- ``application/json`` (or no content type): ``{"target": "...", "arguments": [...]}``, keys
  in any case (the Management SDK writes ``Target`` and ``Arguments``); missing or null
  arguments are ``[]``.
- ``application/octet-stream``, as the Management SDK sends it with MessagePack configured:
  a MessagePack map from protocol name (``json``, ``messagepack``) to the framed bytes of the
  invocation in that protocol. Those bytes go to the clients of that protocol as they are;
  clients of a protocol the map lacks get the message re-encoded once. Entries of protocols
  hubplane does not speak are ignored.
"""

from __future__ import annotations

from typing import Any

import msgpack
import orjson

from backplane.errors import ProtocolError
from backplane.lifetime.base import SerializedMessage
from backplane.protocol import InvocationMessage, get_protocol

from .errors import RestError
from .request import RestRequest

JSON_TYPES = ("", "application/json", "text/json")
BINARY_TYPE = "application/octet-stream"


def invocation_of(request: RestRequest) -> SerializedMessage:
    """The message a ``:send`` body asks for, its bytes cached when the body brought them."""
    kind = request.content_type
    if kind in JSON_TYPES or kind.endswith("+json"):
        target, arguments = json_call(request.body)
        return SerializedMessage(InvocationMessage(target, arguments))
    if kind == BINARY_TYPE:
        return binary_call(request.body)
    raise RestError(
        415, f"unsupported content type {kind!r}: use application/json or application/octet-stream"
    )


def json_call(body: bytes) -> tuple[str, list[Any]]:
    """``(target, arguments)`` of a JSON body."""
    if not body.strip():
        raise RestError(400, 'the body is empty: send {"target": ..., "arguments": [...]}')
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RestError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RestError(400, "the body must be a JSON object with a target and arguments")
    fields: dict[str, Any] = {}
    for key, item in value.items():
        fields.setdefault(key.lower(), item)
    target = fields.get("target")
    if not isinstance(target, str) or not target:
        raise RestError(400, "the body needs a target: the name of a client method (a string)")
    arguments = fields.get("arguments")
    if arguments is None:
        arguments = []
    elif not isinstance(arguments, list):
        raise RestError(400, "the arguments must be a JSON array")
    return target, arguments


def binary_call(body: bytes) -> SerializedMessage:
    """A MessagePack map of framed invocations per protocol, checked and kept as bytes."""
    try:
        value = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several types for bad input
        raise RestError(400, f"the body is not MessagePack: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise RestError(400, "the body must be a MessagePack map: protocol name -> bytes")
    cache: dict[str, bytes] = {}
    message: InvocationMessage | None = None
    for name, data in value.items():
        if not isinstance(name, str) or not isinstance(data, bytes):
            raise RestError(400, "the body must map protocol names (str) to framed bytes (bin)")
        protocol = get_protocol(name)
        if protocol is None:
            continue  # a protocol hubplane does not speak (blazorpack...)
        try:
            messages, consumed = protocol.parse_messages(data)
        except ProtocolError as exc:
            raise RestError(400, f"the {name} payload is not a hub message: {exc}") from None
        if len(messages) != 1 or consumed != len(data):
            raise RestError(400, f"the {name} payload must hold exactly one framed message")
        parsed = messages[0]
        if not isinstance(parsed, InvocationMessage) or parsed.invocation_id is not None:
            raise RestError(400, f"the {name} payload must be an invocation without an id")
        if message is not None and parsed.target != message.target:
            raise RestError(400, "the payloads of the protocols name different targets")
        message = parsed
        cache[name] = data
    if message is None:
        raise RestError(400, "the body has no payload in json or messagepack")
    return SerializedMessage(message, cache)
