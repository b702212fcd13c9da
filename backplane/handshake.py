"""Reading a client's handshake request and deciding on it, sans-I/O."""

from __future__ import annotations

from dataclasses import dataclass

from .dispatch import error_text
from .errors import MessageTooLargeError, ProtocolError
from .protocol import HubProtocol, get_protocol, parse_handshake_request

CANCELED = "Handshake was canceled."


@dataclass(frozen=True, slots=True)
class Handshake:
    """The outcome of a complete handshake request: a protocol, or the error to answer."""

    protocol: HubProtocol | None = None
    version: int = 0
    error: str | None = None


def read_handshake(
    buffer: bytearray,
    *,
    max_message_size: int | None,
    protocols: tuple[str, ...],
    supports_binary: bool,
    detailed_errors: bool,
) -> Handshake | None:
    """The handshake at the start of ``buffer`` (consumed from it), or None while incomplete.

    The errors are worded as the reference server words them.
    """
    try:
        request, consumed = parse_handshake_request(buffer, max_message_size)
    except MessageTooLargeError:
        return Handshake(error=CANCELED)
    except ProtocolError as exc:
        return Handshake(
            error=error_text(
                "An unexpected error occurred during connection handshake.", exc, detailed_errors
            )
        )
    if request is None:
        return None
    del buffer[:consumed]
    name, version = request.protocol, request.version
    protocol = get_protocol(name)
    if protocol is None or name not in protocols:
        return Handshake(error=f"The protocol '{name}' is not supported.")
    if version > 2 or version < 0:
        return Handshake(
            error=f"The server does not support version {version} of the '{name}' protocol."
        )
    if protocol.is_binary and not supports_binary:
        return Handshake(
            error=f"Cannot use the '{name}' protocol on the current transport. "
            "The transport does not support 'Binary' transfer format."
        )
    return Handshake(protocol, version)
