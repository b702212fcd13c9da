"""Malformed input raises ProtocolError (or MessageTooLargeError) and never anything else."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backplane.errors import MessageTooLargeError, ProtocolError
from backplane.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    PING_MESSAGE,
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
)
from backplane.protocol.messagepack import write_varint

from ._strategies import json_messages, json_values, msgpack_messages, msgpack_values

PROTOCOLS = pytest.mark.parametrize(
    "protocol", [JSON_PROTOCOL, MESSAGEPACK_PROTOCOL], ids=["json", "messagepack"]
)


def frame(items: Any) -> bytes:
    """A MessagePack frame holding ``items`` (any value, not necessarily a valid message)."""
    body: bytes = msgpack.packb(items, use_bin_type=True)
    return write_varint(len(body)) + body


def parse_or_protocol_error(protocol: HubProtocol, data: bytes, limit: int | None = None) -> None:
    try:
        protocol.parse_messages(data, limit)
    except ProtocolError:
        pass


# --- JSON ---------------------------------------------------------------------------------------

BAD_JSON = [
    b"not json",
    b"\xff\xfe\xfd",
    b'{"type":1,"target":"\xc3\x28","arguments":[]}',  # invalid UTF-8 inside a string
    b'{"type":1,"target":"\xed\xa0\x80","arguments":[]}',  # UTF-8 encoded surrogate
    b"",
    b" ",
    b"[1,2]",
    b'"text"',
    b"1",
    b"null",
    b"{",
    b'{"type":1',
    b'{"type":1}}',
    b"{}",
    b'{"target":"x","arguments":[]}',  # missing type
    b'{"type":null}',
    b'{"type":"1"}',
    b'{"type":1.0}',
    b'{"type":true}',
    b'{"type":[1]}',
    b'{"type":NaN}',
    # Invocation
    b'{"type":1,"arguments":[]}',
    b'{"type":1,"target":null,"arguments":[]}',
    b'{"type":1,"target":5,"arguments":[]}',
    b'{"type":1,"target":"x"}',
    b'{"type":1,"target":"x","arguments":null}',
    b'{"type":1,"target":"x","arguments":{}}',
    b'{"type":1,"target":"x","arguments":"a"}',
    b'{"type":1,"target":"x","arguments":[],"invocationId":1}',
    b'{"type":1,"target":"x","arguments":[],"invocationId":[]}',
    b'{"type":1,"target":"x","arguments":[],"streamIds":"1"}',
    b'{"type":1,"target":"x","arguments":[],"streamIds":[1]}',
    b'{"type":1,"target":"x","arguments":[],"streamIds":[null]}',
    b'{"type":1,"target":"x","arguments":[],"headers":[]}',
    b'{"type":1,"target":"x","arguments":[],"headers":"h"}',
    b'{"type":1,"target":"x","arguments":[],"headers":{"a":1}}',
    b'{"type":1,"target":"x","arguments":[],"headers":{"a":null}}',
    b'{"type":1,"target":"x","arguments":[],"headers":0}',
    # StreamInvocation
    b'{"type":4,"target":"x","arguments":[]}',
    b'{"type":4,"invocationId":null,"target":"x","arguments":[]}',
    b'{"type":4,"invocationId":"1","arguments":[]}',
    b'{"type":4,"invocationId":"1","target":"x"}',
    b'{"type":4,"invocationId":"1","target":"x","arguments":[],"streamIds":[2]}',
    # StreamItem
    b'{"type":2,"invocationId":"1"}',
    b'{"type":2,"item":1}',
    b'{"type":2,"invocationId":1,"item":1}',
    b'{"type":2,"invocationId":"1","item":1,"headers":{"a":{}}}',
    # Completion
    b'{"type":3}',
    b'{"type":3,"invocationId":null}',
    b'{"type":3,"invocationId":3}',
    b'{"type":3,"invocationId":"1","result":1,"error":"e"}',
    b'{"type":3,"invocationId":"1","result":null,"error":"e"}',
    b'{"type":3,"invocationId":"1","result":1,"error":""}',
    b'{"type":3,"invocationId":"1","error":5}',
    b'{"type":3,"invocationId":"1","error":{}}',
    # CancelInvocation
    b'{"type":5}',
    b'{"type":5,"invocationId":false}',
    # Close
    b'{"type":7,"error":1}',
    b'{"type":7,"allowReconnect":"yes"}',
    b'{"type":7,"allowReconnect":1}',
    # Ack / Sequence
    b'{"type":8}',
    b'{"type":8,"sequenceId":null}',
    b'{"type":8,"sequenceId":"5"}',
    b'{"type":8,"sequenceId":5.5}',
    b'{"type":8,"sequenceId":true}',
    b'{"type":9}',
    b'{"type":9,"sequenceId":[1]}',
]


@pytest.mark.parametrize("body", BAD_JSON, ids=[repr(b[:60]) for b in BAD_JSON])
def test_bad_json_raises_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        JSON_PROTOCOL.parse_messages(body + b"\x1e")
    assert type(info.value) is ProtocolError
    # Also when a valid message comes first, or a partial one follows.
    with pytest.raises(ProtocolError):
        JSON_PROTOCOL.parse_messages(b'{"type":6}\x1e' + body + b'\x1e{"type":')


@pytest.mark.parametrize("depth", [100, 1000, 5000, 100_000])
def test_deep_nesting_parses_or_raises_protocol_error(depth: int) -> None:
    # Whether a decoder accepts very deep nesting depends on its version: either is fine,
    # as long as nothing but ProtocolError escapes.
    json_data = b'{"type":1,"target":"x","arguments":' + b"[" * depth + b"]" * depth + b"}\x1e"
    parse_or_protocol_error(JSON_PROTOCOL, json_data)
    body = b"\x95\x01\x80\xc0\xa1t" + b"\x91" * depth + b"\x90"
    parse_or_protocol_error(MESSAGEPACK_PROTOCOL, write_varint(len(body)) + body)


def test_json_without_separator_is_incomplete_not_an_error() -> None:
    assert JSON_PROTOCOL.parse_messages(b"garbage without a separator") == ([], 0)
    assert JSON_PROTOCOL.parse_messages(b"") == ([], 0)
    assert JSON_PROTOCOL.parse_messages(b'{"type":6}\x1e{"ty') == ([PING_MESSAGE], 11)


def test_json_lenient_parts() -> None:
    # Unknown properties are skipped, property order does not matter, null optionals are absent.
    data = (
        b'{"arguments":[1],"extra":{"x":[1]},"target":"t","invocationId":null,'
        b'"streamIds":null,"headers":null,"type":1}\x1e'
        b'{"invocationId":"1","error":null,"result":2,"type":3}\x1e'
        b'{"error":null,"allowReconnect":null,"type":7}\x1e'
        b'{"type":6,"junk":true}\x1e'
        b'  {"type":6}  \x1e'
    )
    messages, consumed = JSON_PROTOCOL.parse_messages(data)
    assert consumed == len(data)
    assert messages == [
        InvocationMessage("t", [1]),
        CompletionMessage.with_result("1", 2),
        messages[2],
        PING_MESSAGE,
        PING_MESSAGE,
    ]
    assert messages[2].type == 7


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":0}',
        b'{"type":10}',
        b'{"type":-1}',
        b'{"type":99,"anything":[1]}',
        b'{"type":123456789012}',
    ],
)
def test_json_unknown_types_are_skipped(body: bytes) -> None:
    data = body + b'\x1e{"type":6}\x1e'
    assert JSON_PROTOCOL.parse_messages(data) == ([PING_MESSAGE], len(data))


def test_json_max_message_size() -> None:
    message = b'{"type":1,"target":"t","arguments":["' + b"x" * 100 + b'"]}'
    size = len(message)
    data = message + b"\x1e"
    assert JSON_PROTOCOL.parse_messages(data, max_message_size=size)[1] == len(data)
    with pytest.raises(MessageTooLargeError):
        JSON_PROTOCOL.parse_messages(data, max_message_size=size - 1)
    # Incomplete but already too large.
    with pytest.raises(MessageTooLargeError):
        JSON_PROTOCOL.parse_messages(message, max_message_size=size - 1)
    # Incomplete and still within the limit: wait for more.
    assert JSON_PROTOCOL.parse_messages(message, max_message_size=size) == ([], 0)
    # The limit applies per message, not to the whole buffer.
    assert JSON_PROTOCOL.parse_messages(data * 5, max_message_size=size)[1] == len(data) * 5
    with pytest.raises(MessageTooLargeError):
        JSON_PROTOCOL.parse_messages(b'{"type":6}\x1e' + data, max_message_size=size - 1)


# --- MessagePack --------------------------------------------------------------------------------

BAD_MSGPACK: list[tuple[str, bytes]] = [
    ("empty body", b"\x00"),
    ("reserved byte", b"\x01\xc1"),
    ("truncated array", b"\x02\x93\x07"),
    ("extra bytes after the array", b"\x03\x91\x06\x06"),
    ("int, not array", b"\x01\x01"),
    ("map, not array", b"\x01\x80"),
    ("str, not array", b"\x02\xa1\x06"),
    ("nil", b"\x01\xc0"),
    ("empty array", b"\x01\x90"),
    ("type str", frame(["1"])),
    ("type bool", frame([True])),
    ("type nil", frame([None])),
    ("type float", frame([1.0])),
    ("unhashable map key", b"\x05\x92\x06\x81\x91\x01\x01"),
    ("bad timestamp ext", bytes.fromhex("0a 95 01 80 c0 a1 74 91 d4 ff 00")),
    ("array32 claiming huge length", b"\x06\xdd\xff\xff\xff\xff\x06"),
    # Invocation
    ("invocation short", frame([1, {}, None, "t"])),
    ("invocation headers nil", frame([1, None, None, "t", []])),
    ("invocation headers array", frame([1, [], None, "t", []])),
    ("invocation header value int", frame([1, {"a": 1}, None, "t", []])),
    ("invocation header key int", frame([1, {1: "a"}, None, "t", []])),
    ("invocation id int", frame([1, {}, 5, "t", []])),
    ("invocation id bin", frame([1, {}, b"1", "t", []])),
    ("invocation target nil", frame([1, {}, None, None, []])),
    ("invocation target bin", frame([1, {}, None, b"t", []])),
    ("invocation args nil", frame([1, {}, None, "t", None])),
    ("invocation args map", frame([1, {}, None, "t", {}])),
    ("invocation stream ids map", frame([1, {}, None, "t", [], {}])),
    ("invocation stream id int", frame([1, {}, None, "t", [], [1]])),
    # StreamInvocation
    ("stream invocation short", frame([4, {}, "1", "t"])),
    ("stream invocation id nil", frame([4, {}, None, "t", []])),
    ("stream invocation target int", frame([4, {}, "1", 1, []])),
    ("stream invocation args str", frame([4, {}, "1", "t", "a"])),
    # StreamItem
    ("stream item short", frame([2, {}, "1"])),
    ("stream item id nil", frame([2, {}, None, 1])),
    ("stream item headers str", frame([2, "h", "1", 1])),
    # Completion
    ("completion short", frame([3, {}, "1"])),
    ("completion id nil", frame([3, {}, None, 2])),
    ("completion kind 0", frame([3, {}, "1", 0])),
    ("completion kind 4", frame([3, {}, "1", 4, 1])),
    ("completion kind str", frame([3, {}, "1", "3", 1])),
    ("completion kind bool", frame([3, {}, "1", True, "e"])),
    ("completion kind float", frame([3, {}, "1", 2.0])),
    ("completion error without payload", frame([3, {}, "1", 1])),
    ("completion result without payload", frame([3, {}, "1", 3])),
    ("completion error nil", frame([3, {}, "1", 1, None])),
    ("completion error int", frame([3, {}, "1", 1, 5])),
    # CancelInvocation
    ("cancel short", frame([5, {}])),
    ("cancel id int", frame([5, {}, 1])),
    # Close
    ("close short", frame([7])),
    ("close error int", frame([7, 1])),
    ("close allowReconnect int", frame([7, None, 1])),
    ("close allowReconnect str", frame([7, None, "true"])),
    # Ack / Sequence
    ("ack short", frame([8])),
    ("ack str", frame([8, "5"])),
    ("ack float", frame([8, 5.0])),
    ("ack bool", frame([8, True])),
    ("sequence nil", frame([9, None])),
    # Length prefix
    ("varint 5th byte 8", b"\xff\xff\xff\xff\x08"),
    ("varint 5th byte 0x80", b"\x80\x80\x80\x80\x80"),
    ("varint 5th byte 0xff", b"\xff\xff\xff\xff\xff\x01"),
]  # fmt: skip


@pytest.mark.parametrize("data", [d for _, d in BAD_MSGPACK], ids=[n for n, _ in BAD_MSGPACK])
def test_bad_msgpack_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        MESSAGEPACK_PROTOCOL.parse_messages(data)
    assert type(info.value) is ProtocolError
    with pytest.raises(ProtocolError):
        MESSAGEPACK_PROTOCOL.parse_messages(b"\x02\x91\x06" + data + b"\x05\x93")


def test_varint_too_long_message_text() -> None:
    with pytest.raises(ProtocolError, match="Messages bigger than 2GB are not supported."):
        MESSAGEPACK_PROTOCOL.parse_messages(b"\xff\xff\xff\xff\x08")


def test_msgpack_incomplete_is_not_an_error() -> None:
    ping = b"\x02\x91\x06"
    assert MESSAGEPACK_PROTOCOL.parse_messages(b"") == ([], 0)
    assert MESSAGEPACK_PROTOCOL.parse_messages(b"\x80") == ([], 0)  # prefix continues
    assert MESSAGEPACK_PROTOCOL.parse_messages(b"\xff\xff\xff\xff") == ([], 0)
    assert MESSAGEPACK_PROTOCOL.parse_messages(b"\xff\xff\xff\xff\x07") == ([], 0)  # 2 GB - 1
    assert MESSAGEPACK_PROTOCOL.parse_messages(ping + b"\x05\x93") == ([PING_MESSAGE], 3)
    assert MESSAGEPACK_PROTOCOL.parse_messages(b"\x81\x01" + b"\x00" * 100) == ([], 0)
    # A non-minimal prefix is still a valid length (the JS reader accepts it too).
    assert MESSAGEPACK_PROTOCOL.parse_messages(b"\x82\x00\x91\x06") == ([PING_MESSAGE], 4)


def test_msgpack_lenient_parts() -> None:
    data = (
        frame([1, {}, "", "t", [1]])  # empty id = non-blocking
        + frame([1, {}, None, "t", [1], None])  # nil stream ids
        + frame([1, {}, "7", "t", [1], ["2"], "future", 1])  # extra elements
        + frame([2, {}, "1", None, "x"])
        + frame([3, {}, "1", 2, "ignored payload"])
        + frame([3, {}, "1", 3, None, "x"])
        + frame([5, {"k": "v"}, "1", 0])
        + frame([6, 1, 2])
        + frame([7, None])  # the JS client's Close
        + frame([7, "e", True, "x"])
        + frame([7, None, None])
        + frame([8, 3, 4])
    )
    messages, consumed = MESSAGEPACK_PROTOCOL.parse_messages(data)
    assert consumed == len(data)
    assert [repr(m) for m in messages] == [
        "InvocationMessage(invocation_id=None, target='t', arguments=[1], stream_ids=None, headers=None)",
        "InvocationMessage(invocation_id=None, target='t', arguments=[1], stream_ids=None, headers=None)",
        "InvocationMessage(invocation_id='7', target='t', arguments=[1], stream_ids=['2'], headers=None)",
        "StreamItemMessage(invocation_id='1', item=None, headers=None)",
        "CompletionMessage(invocation_id='1', error=None, result=None, has_result=False, headers=None)",
        "CompletionMessage(invocation_id='1', error=None, result=None, has_result=True, headers=None)",
        "CancelInvocationMessage(invocation_id='1', headers={'k': 'v'})",
        "PingMessage()",
        "CloseMessage(error=None, allow_reconnect=False)",
        "CloseMessage(error='e', allow_reconnect=True)",
        "CloseMessage(error=None, allow_reconnect=False)",
        "AckMessage(sequence_id=3)",
    ]  # fmt: skip


@pytest.mark.parametrize("items", [[0], [10], [-1], [99, "anything", {}], [2**40]])
def test_msgpack_unknown_types_are_skipped(items: list[Any]) -> None:
    data = frame(items) + b"\x02\x91\x06"
    assert MESSAGEPACK_PROTOCOL.parse_messages(data) == ([PING_MESSAGE], len(data))


def test_msgpack_max_message_size() -> None:
    message = MESSAGEPACK_PROTOCOL.write_message(InvocationMessage("t", ["x" * 300]))
    body_size = len(message) - 2  # two-byte prefix
    assert MESSAGEPACK_PROTOCOL.parse_messages(message, max_message_size=body_size)[1] == len(
        message
    )
    with pytest.raises(MessageTooLargeError):
        MESSAGEPACK_PROTOCOL.parse_messages(message, max_message_size=body_size - 1)
    # Known from the prefix alone, before the body arrives.
    with pytest.raises(MessageTooLargeError):
        MESSAGEPACK_PROTOCOL.parse_messages(message[:2], max_message_size=body_size - 1)
    with pytest.raises(MessageTooLargeError):
        MESSAGEPACK_PROTOCOL.parse_messages(b"\xff\xff\xff\xff\x07", max_message_size=1 << 20)
    assert MESSAGEPACK_PROTOCOL.parse_messages(message[:2], max_message_size=body_size) == ([], 0)


# --- Errors on the writing side -----------------------------------------------------------------


@PROTOCOLS
def test_writing_a_non_message_raises_type_error(protocol: HubProtocol) -> None:
    with pytest.raises(TypeError):
        protocol.write_message(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        protocol.write_message(HubMessage())


# --- Fuzzing: nothing but ProtocolError, whatever the input -------------------------------------

FUZZ = settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
FUZZ_STRUCTURED = settings(
    max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None
)


@PROTOCOLS
def test_fuzz_arbitrary_bytes(protocol: HubProtocol) -> None:
    @given(st.binary(max_size=200), st.one_of(st.none(), st.integers(0, 300)))
    @FUZZ
    def check(data: bytes, limit: int | None) -> None:
        parse_or_protocol_error(protocol, data, limit)
        parse_or_protocol_error(protocol, data + b"\x1e", limit)

    check()


@pytest.mark.parametrize(
    ("protocol", "strategy"),
    [(JSON_PROTOCOL, json_messages), (MESSAGEPACK_PROTOCOL, msgpack_messages)],
    ids=["json", "messagepack"],
)
def test_fuzz_mutated_valid_messages(
    protocol: HubProtocol, strategy: st.SearchStrategy[HubMessage]
) -> None:
    @given(st.lists(strategy, min_size=1, max_size=3), st.data())
    @FUZZ_STRUCTURED
    def check(messages: list[HubMessage], data: st.DataObject) -> None:
        buf = bytearray(b"".join(protocol.write_message(m) for m in messages))
        for _ in range(data.draw(st.integers(1, 4))):
            action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
            pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
            if action == "flip" and buf:
                buf[pos] = data.draw(st.integers(0, 255))
            elif action == "delete" and buf:
                del buf[pos]
            else:
                buf.insert(pos, data.draw(st.integers(0, 255)))
        parse_or_protocol_error(protocol, bytes(buf))

    check()


# Structured fuzzing: right framing, random content, so the field checks are exercised.
KEYS = [
    "type", "invocationId", "target", "arguments", "streamIds", "headers", "item",
    "result", "error", "allowReconnect", "sequenceId", "protocol", "version",
]  # fmt: skip
type_values = st.one_of(st.integers(-2, 11), json_values)


@given(st.dictionaries(st.sampled_from(KEYS), st.one_of(type_values, json_values), max_size=7))
@FUZZ_STRUCTURED
def test_fuzz_json_objects(obj: dict[str, Any]) -> None:
    if "type" not in obj and obj:
        obj["type"] = 1
    data = orjson.dumps(obj) + b"\x1e"
    parse_or_protocol_error(JSON_PROTOCOL, data)


small_maps = st.dictionaries(
    st.one_of(st.text(max_size=3), st.integers(-5, 5)),
    st.one_of(st.text(max_size=3), st.integers(-5, 5), st.none()),
    max_size=3,
)
array_items = st.one_of(
    type_values, msgpack_values, small_maps, st.lists(st.text(max_size=2), max_size=2)
)


@given(st.lists(array_items, max_size=7), st.integers(1, 9))
@FUZZ_STRUCTURED
def test_fuzz_msgpack_arrays(items: list[Any], message_type: int) -> None:
    if items:
        items[0] = message_type
    parse_or_protocol_error(MESSAGEPACK_PROTOCOL, frame(items))
