"""Round-trip properties: what a protocol writes, it parses back to an equal message."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backplane.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    PING_MESSAGE,
    PROTOCOLS,
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    StreamItemMessage,
    get_protocol,
)

from ._strategies import json_messages, msgpack_messages

BOTH = pytest.mark.parametrize(
    ("protocol", "strategy"),
    [(JSON_PROTOCOL, json_messages), (MESSAGEPACK_PROTOCOL, msgpack_messages)],
    ids=["json", "messagepack"],
)


def assert_same(parsed: list[HubMessage], expected: list[HubMessage]) -> None:
    """Equal, and equal in repr too (so 1 vs True vs 1.0 would not slip through)."""
    assert parsed == expected
    assert repr(parsed) == repr(expected)


@BOTH
def test_single_message_round_trip(
    protocol: HubProtocol, strategy: st.SearchStrategy[HubMessage]
) -> None:
    @given(strategy)
    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    def check(message: HubMessage) -> None:
        data = protocol.write_message(message)
        assert isinstance(data, bytes)
        parsed, consumed = protocol.parse_messages(data)
        assert consumed == len(data)
        assert_same(parsed, [message])
        # The other buffer types give the same answer.
        assert protocol.parse_messages(bytearray(data)) == (parsed, consumed)
        assert protocol.parse_messages(memoryview(data)) == (parsed, consumed)
        # A limit equal to the message size is fine.
        assert protocol.parse_messages(data, max_message_size=len(data))[1] == len(data)

    check()


@BOTH
def test_concatenated_messages_parse_in_order(
    protocol: HubProtocol, strategy: st.SearchStrategy[HubMessage]
) -> None:
    @given(st.lists(strategy, min_size=1, max_size=6))
    @settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    def check(messages: list[HubMessage]) -> None:
        data = b"".join(protocol.write_message(m) for m in messages)
        parsed, consumed = protocol.parse_messages(data)
        assert consumed == len(data)
        assert_same(parsed, messages)

    check()


@BOTH
def test_split_at_every_byte_boundary(
    protocol: HubProtocol, strategy: st.SearchStrategy[HubMessage]
) -> None:
    @given(st.lists(strategy, min_size=1, max_size=3))
    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
    def check(messages: list[HubMessage]) -> None:
        frames = [protocol.write_message(m) for m in messages]
        data = b"".join(frames)
        ends = []
        total = 0
        for frame in frames:
            total += len(frame)
            ends.append(total)
        for cut in range(len(data) + 1):
            parsed, consumed = protocol.parse_messages(data[:cut])
            complete = [end for end in ends if end <= cut]
            assert consumed == (complete[-1] if complete else 0)
            assert parsed == messages[: len(complete)]
            # Feeding the rest after the unconsumed tail gives the remaining messages.
            rest, rest_consumed = protocol.parse_messages(data[consumed:])
            assert rest == messages[len(complete) :]
            assert rest_consumed == len(data) - consumed

    check()


@BOTH
def test_streamed_in_random_chunks(
    protocol: HubProtocol, strategy: st.SearchStrategy[HubMessage]
) -> None:
    @given(st.lists(strategy, min_size=1, max_size=6), st.data())
    @settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
    def check(messages: list[HubMessage], data: st.DataObject) -> None:
        stream = b"".join(protocol.write_message(m) for m in messages)
        buffer = bytearray()
        received: list[HubMessage] = []
        pos = 0
        while pos < len(stream):
            size = data.draw(st.integers(min_value=1, max_value=max(1, len(stream) - pos)))
            buffer += stream[pos : pos + size]
            pos += size
            parsed, consumed = protocol.parse_messages(buffer)
            received.extend(parsed)
            del buffer[:consumed]
        assert not buffer
        assert received == messages

    check()


def test_registry() -> None:
    assert PROTOCOLS == {"json": JSON_PROTOCOL, "messagepack": MESSAGEPACK_PROTOCOL}
    assert get_protocol("json") is JSON_PROTOCOL
    assert get_protocol("messagepack") is MESSAGEPACK_PROTOCOL
    assert get_protocol("blazorpack") is None
    assert get_protocol("JSON") is None
    assert (JSON_PROTOCOL.name, JSON_PROTOCOL.version) == ("json", 1)
    assert (JSON_PROTOCOL.transfer_format, JSON_PROTOCOL.is_binary) == ("Text", False)
    assert (MESSAGEPACK_PROTOCOL.name, MESSAGEPACK_PROTOCOL.version) == ("messagepack", 1)
    assert (MESSAGEPACK_PROTOCOL.transfer_format, MESSAGEPACK_PROTOCOL.is_binary) == (
        "Binary",
        True,
    )


# --- canonical forms -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [JSON_PROTOCOL, MESSAGEPACK_PROTOCOL], ids=["json", "mp"])
def test_empty_optional_fields_parse_as_none(protocol: HubProtocol) -> None:
    written = protocol.write_message(InvocationMessage("t", [], "", [], {}))
    [parsed], _ = protocol.parse_messages(written)
    assert parsed == InvocationMessage("t", [], None, None, None)


@pytest.mark.parametrize("protocol", [JSON_PROTOCOL, MESSAGEPACK_PROTOCOL], ids=["json", "mp"])
def test_completion_writer_rules(protocol: HubProtocol) -> None:
    def round_trip(message: HubMessage) -> HubMessage:
        [parsed], _ = protocol.parse_messages(protocol.write_message(message))
        return parsed

    # An empty error is never written (JS would read it as success): void completion.
    assert round_trip(CompletionMessage("1", error="")) == CompletionMessage("1")
    # The error wins over a result, as in the reference writer.
    assert round_trip(CompletionMessage("1", "bad", 5, True)) == CompletionMessage("1", "bad")
    # A None result is still a result when has_result is set.
    assert round_trip(CompletionMessage.with_result("1", None)) == CompletionMessage(
        "1", None, None, True
    )
    assert round_trip(CompletionMessage("1", None, "ignored", False)) == CompletionMessage("1")


def test_ping_is_a_constant() -> None:
    assert JSON_PROTOCOL.write_message(PING_MESSAGE) == b'{"type":6}\x1e'
    assert MESSAGEPACK_PROTOCOL.write_message(PING_MESSAGE) == bytes.fromhex("029106")
    assert JSON_PROTOCOL.parse_messages(b'{"type":6}\x1e')[0][0] is PING_MESSAGE


# --- payload value mapping -------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str
    tags: list[str]


@dataclasses.dataclass
class Outer:
    point: Point
    when: datetime.datetime


def test_json_payload_encoding() -> None:
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000)
    message = InvocationMessage(
        "t",
        [
            b"\x00\x01\xff",
            bytearray(b"ab"),
            Outer(Point(1, 2.5, "p", ["a"]), when),
            when.replace(tzinfo=datetime.UTC),
            Colour.RED,
            uuid.UUID(int=1),
            (1, 2),
            {"camelCase": 1, "snake_case": 2},
        ],
    )
    data = JSON_PROTOCOL.write_message(message)
    assert data.endswith(b"\x1e") and data.count(b"\x1e") == 1
    args = orjson.loads(data[:-1])["arguments"]
    assert args[0] == "AAH/"  # base64, as .NET writes byte arrays
    assert args[1] == "YWI="
    assert args[2] == {
        "point": {"x": 1, "y": 2.5, "label": "p", "tags": ["a"]},
        "when": "2024-05-06T07:08:09.123000+00:00",  # naive datetimes are UTC
    }
    assert args[3] == "2024-05-06T07:08:09.123000+00:00"
    assert args[4] == "red"
    assert args[5] == "00000000-0000-0000-0000-000000000001"
    assert args[6] == [1, 2]
    assert args[7] == {"camelCase": 1, "snake_case": 2}  # keys are not renamed


def test_json_escapes_control_characters() -> None:
    data = JSON_PROTOCOL.write_message(InvocationMessage("t", ["a\x1eb\x00\n"]))
    assert data.count(b"\x1e") == 1
    [parsed], _ = JSON_PROTOCOL.parse_messages(data)
    assert isinstance(parsed, InvocationMessage)
    assert parsed.arguments == ["a\x1eb\x00\n"]


def test_json_unserializable_payload_raises_type_error() -> None:
    with pytest.raises(TypeError):
        JSON_PROTOCOL.write_message(InvocationMessage("t", [object()]))


def test_msgpack_payload_encoding() -> None:
    naive = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
    aware = naive.replace(tzinfo=datetime.UTC)
    message = InvocationMessage(
        "t",
        [
            b"\x00\x01",
            naive,
            aware,
            Outer(Point(1, 2.5, "p", ["a"]), aware),
            Colour.RED,
            uuid.UUID(int=1),
            (1, 2),
            msgpack.ExtType(5, b"x"),
        ],
    )
    data = MESSAGEPACK_PROTOCOL.write_message(message)
    [parsed], consumed = MESSAGEPACK_PROTOCOL.parse_messages(data)
    assert consumed == len(data)
    assert isinstance(parsed, InvocationMessage)
    assert parsed.arguments == [
        b"\x00\x01",
        aware,  # naive datetimes are written as UTC, read back aware
        aware,
        {"point": {"x": 1, "y": 2.5, "label": "p", "tags": ["a"]}, "when": aware},
        "red",
        "00000000-0000-0000-0000-000000000001",
        [1, 2],
        msgpack.ExtType(5, b"x"),
    ]
    # bytes use the bin family, datetimes the timestamp extension -1.
    assert b"\xc4\x02\x00\x01" in data
    assert b"\xd7\xff" in data or b"\xc7\x0c\xff" in data


def test_msgpack_unserializable_payload_raises_type_error() -> None:
    with pytest.raises(TypeError):
        MESSAGEPACK_PROTOCOL.write_message(InvocationMessage("t", [object()]))
    with pytest.raises(TypeError):
        MESSAGEPACK_PROTOCOL.write_message(InvocationMessage("t", [2**70]))
    # The per-thread packer is still usable afterwards.
    data = MESSAGEPACK_PROTOCOL.write_message(StreamItemMessage("1", 1))
    assert data == bytes.fromhex("06940280a13101")


def test_msgpack_length_prefix_sizes() -> None:
    for size in (0, 1, 100, 126, 127, 128, 300, 16383, 16384, 70000):
        message = InvocationMessage("t", ["x" * size])
        data = MESSAGEPACK_PROTOCOL.write_message(message)
        [parsed], consumed = MESSAGEPACK_PROTOCOL.parse_messages(data)
        assert parsed == message
        assert consumed == len(data)


def test_large_json_message() -> None:
    message = InvocationMessage("t", ["y" * 1_000_000])
    data = JSON_PROTOCOL.write_message(message)
    assert JSON_PROTOCOL.parse_messages(data) == ([message], len(data))


def test_messages_from_threads() -> None:
    import concurrent.futures

    def work(i: int) -> bool:
        out = True
        for j in range(200):
            message: Any = InvocationMessage("t", [i, j, "x" * (i * 10)], str(j))
            data = MESSAGEPACK_PROTOCOL.write_message(message)
            out &= MESSAGEPACK_PROTOCOL.parse_messages(data)[0] == [message]
        return out

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(16)))


@pytest.mark.parametrize("protocol", [JSON_PROTOCOL, MESSAGEPACK_PROTOCOL], ids=["json", "mp"])
def test_writer_is_loud_or_forgiving_about_caller_mistakes(protocol: HubProtocol) -> None:
    # A non-string error is never silently turned into a success.
    with pytest.raises(TypeError):
        protocol.write_message(CompletionMessage("1", error=ValueError("x")))  # type: ignore[arg-type]
    # Missing arguments are written as an empty array, as the reference server does.
    data = protocol.write_message(InvocationMessage("t", None))  # type: ignore[arg-type]
    assert protocol.parse_messages(data)[0] == [InvocationMessage("t", [])]
