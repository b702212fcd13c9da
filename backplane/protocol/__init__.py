"""Sans-I/O SignalR hub protocols: the handshake, the JSON and the MessagePack codecs."""

from __future__ import annotations

from typing import Protocol

from backplane.protocol.handshake import (
    HANDSHAKE_SUCCESS,
    RECORD_SEPARATOR,
    parse_handshake_request,
    write_handshake_response,
)
from backplane.protocol.json import JSON_PROTOCOL, JsonHubProtocol
from backplane.protocol.messagepack import MESSAGEPACK_PROTOCOL, MessagePackHubProtocol
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
    HandshakeRequest,
    Headers,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

__all__ = [
    "ACK",
    "CANCEL_INVOCATION",
    "CLOSE",
    "COMPLETION",
    "HANDSHAKE_SUCCESS",
    "INVOCATION",
    "JSON_PROTOCOL",
    "MESSAGEPACK_PROTOCOL",
    "PING",
    "PING_MESSAGE",
    "PROTOCOLS",
    "RECORD_SEPARATOR",
    "SEQUENCE",
    "STREAM_INVOCATION",
    "STREAM_ITEM",
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HandshakeRequest",
    "Headers",
    "HubMessage",
    "HubProtocol",
    "InvocationMessage",
    "JsonHubProtocol",
    "MessagePackHubProtocol",
    "PingMessage",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "get_protocol",
    "parse_handshake_request",
    "write_handshake_response",
]


class HubProtocol(Protocol):
    """What a hub protocol codec offers: framing-aware parsing and writing of hub messages."""

    name: str
    version: int
    transfer_format: str
    is_binary: bool

    def parse_messages(
        self, data: bytes | bytearray | memoryview, max_message_size: int | None = None
    ) -> tuple[list[HubMessage], int]:
        """Parse every complete message in ``data``: (messages, bytes consumed).

        An incomplete trailing message is left unconsumed. Raises ProtocolError on malformed
        input and MessageTooLargeError when a message is known to exceed ``max_message_size``.
        Unknown message types are skipped.
        """
        ...

    def write_message(self, message: HubMessage) -> bytes:
        """The framed bytes of one message (raises TypeError for unencodable payloads)."""
        ...


PROTOCOLS: dict[str, HubProtocol] = {
    JSON_PROTOCOL.name: JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL,
}
"""The supported hub protocols by handshake name."""


def get_protocol(name: str) -> HubProtocol | None:
    """The hub protocol called ``name`` (case-sensitive, as in the handshake), or None."""
    return PROTOCOLS.get(name)
