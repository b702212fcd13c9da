"""The bytes hubplane puts on Redis: pure encode/decode functions, no I/O.

The default layout is the ASP.NET Core Redis backplane's (``RedisProtocol.cs``), byte for
byte, so .NET nodes and services can share a Redis with hubplane nodes. Our additions are
trailing array elements (which .NET readers skip) or live on channels of our own under the
same prefix. ``docs/redis-protocol.md`` documents every layout with a worked example.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import msgpack

from ..errors import ProtocolError

GROUP_ADD = 1
GROUP_REMOVE = 2

# Kinds of message on our own control channel ``{P}:hubplane:control``.
CONTROL_ABORT_CONNECTION = 1
CONTROL_ABORT_USER = 2
CONTROL_CLOSE_GROUP = 3  # every member of a group
CONTROL_CLOSE_ALL = 4  # every connection of the hub

_INT32_MAX = 2**31 - 1


class WireError(ProtocolError):
    """Bytes from Redis that do not form the expected backplane message."""


def _pack(obj: Any) -> bytes:
    # msgpack-python picks the smallest encoding for each value, as MessagePack-CSharp does.
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


_UNREAD = object()  # an element the streaming reader did not need to look at


def _unpack_array(data: bytes, minimum: int, kind: str, needed: int | None = None) -> list[Any]:
    """The top-level array, read as leniently as .NET's MessagePackReader reads it.

    Bytes after the array are ignored; when the whole array does not decode, only its
    first ``needed`` elements are read (the rest stay ``_UNREAD``), as .NET never looks at
    elements it does not need. Strings keep undecodable bytes as surrogate escapes, so a
    body sent with an old-spec ``str`` header can be turned back into its exact bytes.
    """
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=False, unicode_errors="surrogateescape"
        )
    except msgpack.ExtraData as extra:
        value = extra.unpacked
    except Exception as exc:  # msgpack raises several types for bad input
        value = _unpack_prefix(data, needed if needed is not None else minimum, kind, exc)
    if not isinstance(value, list):
        raise WireError(f"{kind}: expected an array")
    if len(value) < minimum:
        raise WireError(f"Insufficient items in {kind} array.")
    return value


def _unpack_prefix(data: bytes, needed: int, kind: str, cause: Exception) -> list[Any]:
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, unicode_errors="surrogateescape", max_buffer_size=0
    )
    unpacker.feed(data)
    try:
        length = unpacker.read_array_header()
        items: list[Any] = [unpacker.unpack() for _ in range(min(length, needed))]
    except Exception:
        raise WireError(f"{kind}: not MessagePack ({cause})") from cause
    # Pad to at most one element past what was read: enough for the length checks, and a
    # header claiming billions of elements allocates nothing.
    return items + [_UNREAD] * (min(length, needed + 1) - len(items))


def _text(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:
        # Invalid UTF-8 becomes U+FFFD, as .NET's reader does.
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _str(value: Any, kind: str, what: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{kind}: {what} must be a string")
    return _text(value)


def _opt_str(value: Any, kind: str, what: str) -> str | None:
    return None if value is None else _str(value, kind, what)


def _binary(value: Any, kind: str, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if value is None:
        return b""
    if isinstance(value, str):  # an old-spec str header carrying bytes, which .NET accepts
        return value.encode("utf-8", "surrogateescape")
    raise WireError(f"{kind}: {what} must be binary")


def _int(value: Any, kind: str, what: str, low: int = -(2**31), high: int = _INT32_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"{kind}: {what} must be an integer")
    if not low <= value <= high:
        raise WireError(f"{kind}: {what} {value} is out of range")
    return value


# --------------------------------------------------------------------------- channels


class Channels:
    """Channel names of one hub, as bytes: ``<prefix bytes><hub wire name>:<suffix>``.

    The prefix is glued on with no separator, as StackExchange.Redis does with
    ``ChannelPrefix``.
    """

    __slots__ = ("prefix", "hub", "base", "all", "internal_groups", "control")

    def __init__(self, hub: str, prefix: str | bytes = b"") -> None:
        self.prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        self.hub = hub
        self.base = self.prefix + hub.encode()
        self.all = self.base + b":all"
        self.internal_groups = self.base + b":internal:groups"
        # Ours: aborts of connections and users wherever they are connected.
        self.control = self.base + b":hubplane:control"

    def connection(self, connection_id: str) -> bytes:
        """Where invocations for one connection go (its owner subscribes)."""
        return self.base + b":connection:" + connection_id.encode()

    def group(self, group: str) -> bytes:
        """Where invocations for a group go (nodes with local members subscribe)."""
        return self.base + b":group:" + group.encode()

    def user(self, user_id: str) -> bytes:
        """Where invocations for a user go (nodes with the user's connections subscribe)."""
        return self.base + b":user:" + user_id.encode()

    def audience(self, kind: str, name: str) -> bytes:
        """The channel of ``all``, or of ``group``/``user``/``connection`` ``name`` (the words
        of ``lifetime.base.TO_*``)."""
        return self.all if kind == "all" else self.base + b":%s:%s" % (kind.encode(), name.encode())

    def ack(self, server: str) -> bytes:
        """Where group-command acks for ``server`` go."""
        return self.base + b":internal:ack:" + server.encode()

    def return_channel(self, server: str) -> bytes:
        """Where client-result completions for ``server`` go."""
        return self.base + b":internal:return:" + server.encode()

    def return_channel_name(self, server: str) -> str:
        """The return channel as written inside a 4-element invocation (no prefix, as .NET)."""
        return f"{self.hub}:internal:return:{server}"


# --------------------------------------------------------------------------- invocation


class RedisInvocation:
    """A decoded invocation: exclusions, per-protocol framed bytes, client-result fields."""

    __slots__ = ("excluded", "payloads", "invocation_id", "return_channel", "origin", "seq", "prev")

    def __init__(
        self,
        excluded: list[str] | None,
        payloads: dict[str, bytes],
        invocation_id: str | None = None,
        return_channel: str | None = None,
        origin: str | None = None,
        seq: int = 0,
        prev: int = 0,
    ) -> None:
        self.excluded = excluded
        self.payloads = payloads
        self.invocation_id = invocation_id
        self.return_channel = return_channel
        self.origin = origin
        #: The publisher's numbers (``sequence.py``); 0 when the message carries none.
        self.seq = seq
        self.prev = prev

    def __repr__(self) -> str:
        return (
            f"RedisInvocation(excluded={self.excluded!r}, protocols={sorted(self.payloads)!r}, "
            f"invocation_id={self.invocation_id!r}, return_channel={self.return_channel!r}, "
            f"origin={self.origin!r}, seq={self.seq}, prev={self.prev})"
        )


def write_invocation(
    payloads: Mapping[str, bytes],
    excluded: Collection[str] | None = None,
    invocation_id: str | None = None,
    return_channel: str | None = None,
    origin: str | None = None,
    seq: int = 0,
    prev: int = 0,
) -> bytes:
    """Encode an invocation.

    ``[excluded ids, {protocol: framed bytes}]``; with a client result also
    ``invocationId, returnChannel`` (the .NET 4-element form). ``origin`` (ours) appends the
    sending node's name as a fifth element (with nils before it when there is no result),
    so that node can skip its own message: it has already delivered it locally. With an
    origin, a ``seq`` appends the publisher's numbers as elements 5 and 6 (``seq``, ``prev``):
    receivers drop a message they have delivered already (``sequence.py``).
    """
    items: list[Any] = [list(excluded) if excluded else [], dict(payloads)]
    if return_channel:
        items.append(invocation_id)
        items.append(return_channel)
    elif origin is not None:
        items.append(None)
        items.append(None)
    if origin is not None:
        items.append(origin)
        if seq:
            items.append(seq)
            items.append(prev)
    return _pack(items)


def read_invocation(data: bytes) -> RedisInvocation:
    """Decode an invocation (extra trailing elements are ignored)."""
    kind = "Invocation"
    items = _unpack_array(data, 2, kind, needed=7)
    raw_excluded = items[0]
    if not isinstance(raw_excluded, list):
        raise WireError(f"{kind}: excluded ids must be an array")
    # A nil id excludes nobody (.NET reads it as null).
    excluded = [_str(x, kind, "an excluded id") for x in raw_excluded if x is not None] or None
    raw_payloads = items[1]
    if not isinstance(raw_payloads, dict):
        raise WireError(f"{kind}: payloads must be a map")
    payloads: dict[str, bytes] = {}
    for name, body in raw_payloads.items():
        payloads[_str(name, kind, "a protocol name")] = _binary(body, kind, "a payload")
    invocation_id = return_channel = origin = None
    if len(items) > 3:
        invocation_id = _opt_str(items[2], kind, "the invocation id")
        return_channel = _opt_str(items[3], kind, "the return channel")
    seq = prev = 0
    if len(items) > 4 and isinstance(items[4], str):
        origin = _text(items[4])  # ours; anything else there is someone else's addition
        if len(items) > 6 and _counter(items[5]) and _counter(items[6]) is not None:
            seq, prev = items[5], items[6]
    return RedisInvocation(excluded, payloads, invocation_id, return_channel, origin, seq, prev)


def _counter(value: Any) -> int | None:
    """``value`` when it is a publisher's number (a non-negative integer), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


# --------------------------------------------------------------------------- group commands


class GroupCommand:
    """Add or remove a connection (owned by some node) to or from a group."""

    __slots__ = ("id", "server", "action", "group", "connection_id")

    def __init__(self, id: int, server: str, action: int, group: str, connection_id: str) -> None:
        self.id = id
        self.server = server
        self.action = action
        self.group = group
        self.connection_id = connection_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupCommand):
            return NotImplemented
        return (self.id, self.server, self.action, self.group, self.connection_id) == (
            other.id,
            other.server,
            other.action,
            other.group,
            other.connection_id,
        )

    def __repr__(self) -> str:
        return (
            f"GroupCommand({self.id}, {self.server!r}, {self.action}, {self.group!r}, "
            f"{self.connection_id!r})"
        )


def write_group_command(command: GroupCommand) -> bytes:
    """``[id, serverName, action, group, connectionId]``."""
    if command.action not in (GROUP_ADD, GROUP_REMOVE):
        raise ValueError(f"unknown group action {command.action}")
    return _pack([command.id, command.server, command.action, command.group, command.connection_id])


def read_group_command(data: bytes) -> GroupCommand:
    """Decode a group command."""
    kind = "GroupCommand"
    items = _unpack_array(data, 5, kind)
    return GroupCommand(
        _int(items[0], kind, "the id"),
        _str(items[1], kind, "the server name"),
        _int(items[2], kind, "the action", 0, 255),
        _str(items[3], kind, "the group"),
        _str(items[4], kind, "the connection id"),
    )


def next_command_id(current: int) -> int:
    """The next Int32 command id after ``current`` (1 after the largest)."""
    return 1 if current >= _INT32_MAX else current + 1


# --------------------------------------------------------------------------- ack, completion


def write_ack(command_id: int, refusal: str | None = None) -> bytes:
    """``[id]``; a hubplane node refusing the command (a limit) adds the reason:
    ``[id, reason]`` (.NET reads the first element only)."""
    return _pack([command_id] if refusal is None else [command_id, refusal])


def read_ack(data: bytes) -> int:
    """Decode an ack, returning the command id."""
    return _int(_unpack_array(data, 1, "Ack")[0], "Ack", "the id")


def read_ack_refusal(data: bytes) -> str | None:
    """The reason an ack refuses its command with (``[id, reason]``), or None."""
    items = _unpack_array(data, 1, "Ack")
    return items[1] if len(items) > 1 and isinstance(items[1], str) else None


def write_completion(protocol_name: str, framed: bytes) -> bytes:
    """``[protocolName, framed completion bytes]``: a client's answer to a client result."""
    return _pack([protocol_name, framed])


def read_completion(data: bytes) -> tuple[str, bytes]:
    """Decode a completion: the protocol name and its framed CompletionMessage bytes."""
    kind = "CompletionMessage"
    items = _unpack_array(data, 2, kind)
    return _str(items[0], kind, "the protocol name"), _binary(items[1], kind, "the completion")


# --------------------------------------------------------------------------- control (ours)


def write_control(kind: int, target: str) -> bytes:
    """``[kind, target]`` on ``{P}:hubplane:control`` (abort a connection or a user)."""
    return _pack([kind, target])


def read_control(data: bytes) -> tuple[int, str]:
    """Decode a control message."""
    items = _unpack_array(data, 2, "Control")
    return _int(items[0], "Control", "the kind"), _str(items[1], "Control", "the target")


class ControlClose:
    """A control message with its optional elements: the Close reason and the exclusions."""

    __slots__ = ("kind", "target", "reason", "excluded")

    def __init__(
        self, kind: int, target: str, reason: str | None = None, excluded: Collection[str] = ()
    ) -> None:
        self.kind = kind
        self.target = target
        self.reason = reason
        self.excluded = excluded

    def __repr__(self) -> str:
        return (
            f"ControlClose({self.kind}, {self.target!r}, reason={self.reason!r}, "
            f"excluded={list(self.excluded)!r})"
        )


def write_control_close(close: ControlClose) -> bytes:
    """``[kind, target, reason or nil, [excluded ids]]``: close with a reason (element 2),
    leaving some connections alone (element 3). Older readers take the first two only."""
    return _pack([close.kind, close.target, close.reason, list(close.excluded)])


def read_control_close(data: bytes) -> ControlClose:
    """Decode a control message, its optional elements included (absent: no reason, none
    excluded)."""
    kind = "Control"
    items = _unpack_array(data, 2, kind, needed=4)
    reason = _opt_str(items[2], kind, "the reason") if len(items) > 2 else None
    excluded: list[str] = []
    if len(items) > 3 and items[3] is not None:
        if not isinstance(items[3], list):
            raise WireError("Control: the excluded ids must be an array")
        excluded = [_str(x, kind, "an excluded id") for x in items[3]]
    return ControlClose(
        _int(items[0], kind, "the kind"), _str(items[1], kind, "the target"), reason, excluded
    )
