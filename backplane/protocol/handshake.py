"""The SignalR handshake: the client's JSON request and the server's JSON reply (0x1E-terminated).

The handshake is JSON text for every hub protocol (MessagePack included).
"""

from __future__ import annotations

import json as _stdlib_json
from typing import Any

import orjson

from backplane.errors import MessageTooLargeError, ProtocolError
from backplane.protocol.messages import HandshakeRequest

__all__ = [
    "HANDSHAKE_SUCCESS",
    "RECORD_SEPARATOR",
    "parse_handshake_request",
    "write_handshake_response",
]

RECORD_SEPARATOR = b"\x1e"
"""The byte that ends the handshake and every JSON hub message."""

HANDSHAKE_SUCCESS: bytes = b"{}\x1e"
"""The successful handshake reply."""


def parse_handshake_request(
    data: bytes | bytearray | memoryview, max_size: int | None = None
) -> tuple[HandshakeRequest | None, int]:
    """Parse the handshake at the start of ``data``: (request, bytes consumed) or (None, 0)."""
    buf = data if type(data) is bytes else bytes(data)
    end = buf.find(0x1E)
    if end < 0:
        if max_size is not None and len(buf) > max_size:
            raise MessageTooLargeError(
                f"The handshake request is larger than the maximum of {max_size} bytes."
            )
        return None, 0
    if max_size is not None and end > max_size:
        raise MessageTooLargeError(
            f"The handshake request is larger than the maximum of {max_size} bytes."
        )
    try:
        obj: Any = orjson.loads(buf[:end])
    except Exception as exc:  # orjson.JSONDecodeError, RecursionError, ...
        raise ProtocolError(f"The handshake request is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise ProtocolError("The handshake request must be a JSON object.")
    protocol = obj.get("protocol")
    if type(protocol) is not str:
        raise ProtocolError(
            "Missing required property 'protocol'."
            if protocol is None
            else "Expected 'protocol' to be of type String."
        )
    version = obj.get("version")
    if type(version) is not int:
        raise ProtocolError(
            "Missing required property 'version'."
            if version is None
            else "Expected 'version' to be of type Integer."
        )
    return HandshakeRequest(protocol, version), end + 1


def write_handshake_response(error: str | None = None) -> bytes:
    """The handshake reply: ``{}`` + 0x1E on success, ``{"error":"..."}`` + 0x1E otherwise."""
    if error is None:
        return HANDSHAKE_SUCCESS
    # ASCII only: the MessagePack JS client decodes the reply byte by byte.
    text = _stdlib_json.dumps({"error": error}, ensure_ascii=True, separators=(",", ":"))
    return text.encode("ascii") + RECORD_SEPARATOR
