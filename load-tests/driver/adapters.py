"""Protocol adapters: what a client sends for each action and how it knows an answer.

Every payload the driver sends carries ``@T<monotonic ns>@`` (the send time) and ``@S<n>@``
(the sending connection), so a receiver finds every message in a frame, whatever the protocol
(a SignalR JSON frame may hold several messages, MessagePack strings appear as their raw bytes),
with ``bytes.find`` and no parsing. ``CLOCK_MONOTONIC`` is the same in every process of the
machine, so the sender and the receiver may be different driver processes.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import msgpack

MARK = b"@T"
RECORD_SEPARATOR = b"\x1e"
_TOKEN = re.compile(rb'"connectionToken"\s*:\s*"([^"]+)"')
_ID = re.compile(rb'"connectionId"\s*:\s*"([^"]+)"')  # negotiate version 0 has no token
_SID = re.compile(rb'"sid"\s*:\s*"([^"]+)"')


class Adapter:
    """The base: a bare WebSocket app that sends frames on as they are (``/echo`` etc.)."""

    name = "raw"
    binary = False  # send binary frames (else text)
    greets = False  # the server speaks first after the upgrade

    def __init__(self, base_url: str, scenario: str, index: int, user: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.scenario = scenario
        self.index = index
        self.user = user
        # What others put in a send-to-connection message to reach this one (the server's
        # connection id: SignalR's from negotiate, Socket.IO's from the namespace connect).
        self.address = str(index)

    async def ws_url(self) -> str:
        """The WebSocket URL of one new connection (after negotiate, where there is one)."""
        base = "ws" + self.base_url[4:]
        if self.scenario == "connection":
            return f"{base}/direct?c={self.index}"
        if self.scenario == "users":
            return f"{base}/users?u={self.user}"
        path = {"broadcast": "/broadcast", "groups": "/groups", "biggroups": "/groups"}
        return base + path.get(self.scenario, "/echo")

    def handshake(self) -> bytes | None:
        """The first frame to send after the upgrade, if the protocol has one."""
        return None

    def ready(self, data: bytes) -> tuple[bool, bytes | None]:
        """Is this frame the end of the handshake? And a frame to answer it with, if any."""
        return True, None

    def ping_reply(self, data: bytes) -> bytes | None:
        """The answer to a protocol-level ping frame, if this is one."""
        return None

    def keepalive(self) -> bytes | None:
        """A frame that keeps an idle connection alive, if the protocol needs one."""
        return None

    def echo(self, payload: str) -> bytes:
        return payload.encode()

    def broadcast(self, payload: str) -> bytes:
        return payload.encode()

    def join(self, group: str) -> bytes:
        return b"J:" + group.encode()

    def is_ack(self, data: bytes) -> bool:
        """Is this the answer to ``join``?"""
        return data == b"ok"

    def send_group(self, group: str, payload: str) -> bytes:
        return payload.encode()

    def send_connection(self, address: str, payload: str) -> bytes:
        """A message for the one connection ``address``."""
        return f"{address} {payload}".encode()

    def send_user(self, user: str, payload: str) -> bytes:
        """A message for every connection of ``user``."""
        return f"{user} {payload}".encode()


async def negotiate(base_url: str, version: int = 1, extra: str = "") -> tuple[str, str]:
    """``POST {hub}/negotiate`` over a bare HTTP/1.1 connection: (token for ``?id=``, id)."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = (
            f"POST {parts.path}/negotiate?negotiateVersion={version}{extra} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        answer = await reader.read(-1)
    finally:
        writer.close()
    match = _TOKEN.search(answer) or _ID.search(answer)
    ident = _ID.search(answer)
    if not answer.startswith(b"HTTP/1.1 200") or match is None or ident is None:
        raise ConnectionError(f"negotiate failed: {answer[:200]!r}")
    return match.group(1).decode(), ident.group(1).decode()


class SignalRJson(Adapter):
    """The SignalR JSON hub protocol: negotiate, handshake, invocations, 0x1E framing."""

    name = "signalr-json"
    protocol = "json"

    def __init__(self, base_url: str, scenario: str, index: int, user: str | None = None) -> None:
        super().__init__(base_url, scenario, index, user)
        self._ids = 0

    async def ws_url(self) -> str:
        # The user rides in the query of negotiate and of the upgrade, as the official clients
        # repeat the hub URL's query; the benchmark servers take it as the authenticated user.
        extra = f"&user={self.user}" if self.user else ""
        token, self.address = await negotiate(self.base_url, 1, extra)
        return f"ws{self.base_url[4:]}?id={token}{extra}"

    def handshake(self) -> bytes | None:
        return b'{"protocol":"%s","version":1}\x1e' % self.protocol.encode()

    def ready(self, data: bytes) -> tuple[bool, bytes | None]:
        if data.startswith(b"{}\x1e"):
            return True, None
        raise ConnectionError(f"handshake refused: {data[:200]!r}")

    def keepalive(self) -> bytes | None:
        return self._message(6, None, None, None)

    def _message(
        self, kind: int, invocation: str | None, target: str | None, args: list[str] | None
    ) -> bytes:
        if kind == 6:
            return b'{"type":6}\x1e'
        head = b'{"type":1,' + (
            b'"invocationId":"%s",' % invocation.encode() if invocation else b""
        )
        body = b'"target":"%s","arguments":[%s]}\x1e' % (
            (target or "").encode(),
            b",".join(b'"%s"' % a.encode() for a in args or ()),
        )
        return head + body

    def _next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def echo(self, payload: str) -> bytes:
        return self._message(1, self._next_id(), "Echo", [payload])

    def broadcast(self, payload: str) -> bytes:
        return self._message(1, None, "Broadcast", [payload])

    def join(self, group: str) -> bytes:
        return self._message(1, self._next_id(), "JoinGroup", [group])

    def is_ack(self, data: bytes) -> bool:
        return b'"type":3' in data

    def send_group(self, group: str, payload: str) -> bytes:
        return self._message(1, None, "SendGroup", [group, payload])

    def send_connection(self, address: str, payload: str) -> bytes:
        return self._message(1, None, "SendConnection", [address, payload])

    def send_user(self, user: str, payload: str) -> bytes:
        return self._message(1, None, "SendUser", [user, payload])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class SignalRMessagePack(SignalRJson):
    """The SignalR MessagePack hub protocol (binary frames, VarInt length prefixes)."""

    name = "signalr-msgpack"
    protocol = "messagepack"
    binary = True

    def _message(
        self, kind: int, invocation: str | None, target: str | None, args: list[str] | None
    ) -> bytes:
        body = msgpack.packb([6] if kind == 6 else [1, {}, invocation, target, args or []])
        return _varint(len(body)) + body

    def is_ack(self, data: bytes) -> bool:
        # A Completion is [3, headers, id, ...]: a fixarray marker, then 3.
        i = 0
        while data[i] & 0x80:
            i += 1
        return len(data) > i + 2 and data[i + 2] == 3


class SocketIO(Adapter):
    """Socket.IO v4 over Engine.IO v4, WebSocket transport only (no long-polling upgrade)."""

    name = "socketio"
    greets = True

    def __init__(self, base_url: str, scenario: str, index: int, user: str | None = None) -> None:
        super().__init__(base_url, scenario, index, user)
        self._acks = 0

    async def ws_url(self) -> str:
        return f"ws{self.base_url[4:]}?EIO=4&transport=websocket"

    def ready(self, data: bytes) -> tuple[bool, bytes | None]:
        if data.startswith(b"0{"):  # Engine.IO open: connect to the default namespace
            return False, b"40"
        if data.startswith(b"40"):
            sid = _SID.search(data)  # the socket's id: what ``emit(to=...)`` addresses
            if sid is not None:
                self.address = sid.group(1).decode()
            return True, None
        if data.startswith(b"44"):
            raise ConnectionError(f"namespace refused: {data[:200]!r}")
        return False, None

    def ping_reply(self, data: bytes) -> bytes | None:
        return b"3" if data == b"2" else None

    def _event(self, ack: bool, *args: str) -> bytes:
        prefix = b"42"
        if ack:
            self._acks += 1
            prefix += str(self._acks).encode()
        return prefix + b"[" + b",".join(b'"%s"' % a.encode() for a in args) + b"]"

    def echo(self, payload: str) -> bytes:
        return self._event(True, "echo", payload)

    def broadcast(self, payload: str) -> bytes:
        return self._event(False, "broadcast", payload)

    def join(self, group: str) -> bytes:
        return self._event(True, "join", group)

    def is_ack(self, data: bytes) -> bool:
        return data.startswith(b"43")

    def send_group(self, group: str, payload: str) -> bytes:
        return self._event(False, "group", group, payload)

    def send_connection(self, address: str, payload: str) -> bytes:
        return self._event(False, "connection", address, payload)

    def send_user(self, user: str, payload: str) -> bytes:
        raise NotImplementedError("python-socketio has no users (see bench.py)")


ADAPTERS: dict[str, type[Adapter]] = {
    "raw": Adapter,
    "signalr-json": SignalRJson,
    "signalr-msgpack": SignalRMessagePack,
    "socketio": SocketIO,
}
