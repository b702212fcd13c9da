"""A raw SignalR WebSocket client for bad-input tests: it writes exactly the bytes it is told.

Built on the ``websockets`` sync client. Reads are bounded; pings from the server are kept
separately so tests can ignore or check them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

RS = "\x1e"
RS_BYTE = b"\x1e"


def varint(n: int) -> bytes:
    """The MessagePack protocol's length prefix."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pack_frame(message: list[Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return varint(len(body)) + body


def unpack_frames(data: bytes) -> list[Any]:
    """Split a binary WebSocket message into MessagePack hub messages."""
    out: list[Any] = []
    pos = 0
    while pos < len(data):
        length = 0
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append(msgpack.unpackb(data[pos : pos + length], raw=False))
        pos += length
    return out


def parse_json_frames(data: str) -> list[dict[str, Any]]:
    assert data.endswith(RS), f"JSON delivery does not end with the record separator: {data!r}"
    return [json.loads(part) for part in data.split(RS)[:-1]]


class RawClient:
    """One WebSocket to a hub; ``protocol`` is "json" or "messagepack"."""

    def __init__(self, url: str, protocol: str = "json", *, open_timeout: float = 5.0) -> None:
        self.protocol = protocol
        self.ws: ClientConnection = connect(
            url,
            open_timeout=open_timeout,
            proxy=None,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            max_size=None,
        )
        self.ws.__enter__()  # we close it ourselves; this also marks it as managed
        self.frames: list[str | bytes] = []  # every WebSocket message received, raw
        self.pings = 0
        self._pending: list[Any] = []

    # --- writing -----------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def send_bytes(self, data: bytes) -> None:
        self.ws.send(data)

    def handshake(self, timeout: float = 5.0) -> dict[str, Any]:
        """Send the handshake (always JSON text, as the JS client does); return the reply."""
        self.send_text(json.dumps({"protocol": self.protocol, "version": 1}) + RS)
        return self.read_handshake(timeout)

    def read_handshake(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = self._recv(timeout)
        data = frame.encode() if isinstance(frame, str) else frame
        head, sep, rest = data.partition(RS_BYTE)
        assert sep, f"handshake reply without record separator: {data!r}"
        reply = json.loads(head)
        if rest:  # messages that followed the reply in the same delivery
            self._pending.extend(self._decode(rest if isinstance(frame, bytes) else rest.decode()))
        return reply

    def send_message(self, message: dict[str, Any] | list[Any]) -> None:
        """One hub message in this connection's protocol."""
        if self.protocol == "json":
            self.send_text(json.dumps(message) + RS)
        else:
            assert isinstance(message, list)
            self.send_bytes(pack_frame(message))

    def invoke(self, target: str, *args: Any, invocation_id: str | None = "1") -> None:
        if self.protocol == "json":
            msg: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
            if invocation_id is not None:
                msg["invocationId"] = invocation_id
            self.send_message(msg)
        else:
            self.send_message([1, {}, invocation_id, target, list(args)])

    # --- reading -----------------------------------------------------------------------
    def _recv(self, timeout: float) -> str | bytes:
        frame = self.ws.recv(timeout=timeout)
        self.frames.append(frame)
        return frame

    def _decode(self, frame: str | bytes) -> list[Any]:
        if self.protocol == "json":
            assert isinstance(frame, str), f"JSON protocol message in a binary frame: {frame!r}"
            return parse_json_frames(frame)
        assert isinstance(frame, bytes), f"MessagePack message in a text frame: {frame!r}"
        return unpack_frames(frame)

    def next_message(self, timeout: float = 5.0, *, skip_pings: bool = True) -> Any:
        """The next hub message (dict for JSON, list for MessagePack)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                msg = self._pending.pop(0)
                if skip_pings and self.type_of(msg) == 6:
                    self.pings += 1
                    continue
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no hub message within {timeout}s")
            self._pending.extend(self._decode(self._recv(left)))

    @staticmethod
    def type_of(msg: Any) -> int:
        return int(msg["type"] if isinstance(msg, dict) else msg[0])

    def completion(self, timeout: float = 5.0) -> Any:
        msg = self.next_message(timeout)
        assert self.type_of(msg) == 3, f"expected a Completion, got {msg!r}"
        return msg

    def wait_closed(self, timeout: float = 5.0) -> list[Any]:
        """Read until the server closes the socket; returns the hub messages seen before."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = list(self._pending)
        self._pending.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the server did not close the socket within {timeout}s")
            try:
                frame = self._recv(left)
            except ConnectionClosed:
                return seen
            try:
                seen.extend(self._decode(frame))
            except (AssertionError, ValueError) as e:
                seen.append({"undecodable": repr(frame), "why": str(e)})

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
