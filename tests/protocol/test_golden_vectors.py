"""Golden vectors produced by the official @microsoft/signalr 10.0.11 JS client (and section 10
of the protocol notes): we must read what the client writes, and write what it reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest

from backplane.protocol import (
    ACK,
    CANCEL_INVOCATION,
    CLOSE,
    COMPLETION,
    INVOCATION,
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
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
    HubMessage,
    InvocationMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    parse_handshake_request,
)
from backplane.protocol.messagepack import read_varint, write_varint

VECTORS_PATH = Path(__file__).resolve().parent / "vectors" / "hub-protocol-js-client.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
WRITE_VECTORS: list[dict[str, Any]] = VECTORS["write"]
PARSE_VECTORS: list[dict[str, Any]] = VECTORS["parse"]
JSON_PARSE_VECTORS = [v for v in PARSE_VECTORS if v["protocol"] == "json"]
MSGPACK_PARSE_VECTORS = [v for v in PARSE_VECTORS if v["protocol"] == "messagepack"]


def from_js(d: dict[str, Any]) -> HubMessage:
    """Our message object for a JS-shaped message dict, in the form our parsers produce."""
    t = d["type"]
    headers = d.get("headers") or None
    if t == INVOCATION:
        return InvocationMessage(
            d["target"],
            d["arguments"],
            d.get("invocationId") or None,
            d.get("streamIds") or None,
            headers,
        )
    if t == STREAM_INVOCATION:
        return StreamInvocationMessage(
            d["invocationId"], d["target"], d["arguments"], d.get("streamIds") or None, headers
        )
    if t == STREAM_ITEM:
        return StreamItemMessage(d["invocationId"], d["item"], headers)
    if t == COMPLETION:
        if d.get("error") is not None:
            return CompletionMessage(d["invocationId"], d["error"], headers=headers)
        if "result" in d:
            return CompletionMessage(d["invocationId"], None, d["result"], True, headers)
        return CompletionMessage(d["invocationId"], headers=headers)
    if t == CANCEL_INVOCATION:
        return CancelInvocationMessage(d["invocationId"], headers)
    if t == PING:
        return PING_MESSAGE
    if t == CLOSE:
        return CloseMessage(d.get("error"), bool(d.get("allowReconnect", False)))
    if t == ACK:
        return AckMessage(d["sequenceId"])
    if t == SEQUENCE:
        return SequenceMessage(d["sequenceId"])
    raise AssertionError(f"unexpected type {t}")


def split_frames(data: bytes) -> list[bytes]:
    """The MessagePack bodies of a buffer of length-prefixed frames (independent of the codec)."""
    frames = []
    pos = 0
    while pos < len(data):
        prefix = read_varint(data, pos)
        assert prefix is not None
        length, start = prefix
        frames.append(data[start : start + length])
        pos = start + length
    return frames


def server_layout(data: bytes) -> bytes:
    """The same messages in the layout our writer (and the reference server) uses:
    6-element Invocation/StreamInvocation and 3-element Close."""
    out = b""
    for body in split_frames(data):
        items = msgpack.unpackb(body, raw=False)
        if items[0] in (INVOCATION, STREAM_INVOCATION) and len(items) == 5:
            items.append([])
        if items[0] == CLOSE and len(items) == 2:
            items.append(False)
        packed = msgpack.packb(items, use_bin_type=True)
        out += write_varint(len(packed)) + packed
    return out


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v.get("name") or v.get("input", "")[:40] for v in vectors]


def test_vectors_are_loaded() -> None:
    assert len(WRITE_VECTORS) >= 15
    assert len(JSON_PARSE_VECTORS) >= 9
    assert len(MSGPACK_PARSE_VECTORS) >= 11


# --- "write" vectors: bytes the JS client sends -------------------------------------------------


@pytest.mark.parametrize("vector", WRITE_VECTORS, ids=ids(WRITE_VECTORS))
def test_write_vector_json(vector: dict[str, Any]) -> None:
    expected = from_js(vector["message"])
    js_bytes = vector["json"].encode("utf-8")

    # We read what the client writes.
    assert JSON_PROTOCOL.parse_messages(js_bytes) == ([expected], len(js_bytes))

    # What we write for the same message parses back to it, and holds the same JSON object
    # (key order aside: ours puts "type" first, like the reference server).
    ours = JSON_PROTOCOL.write_message(expected)
    assert JSON_PROTOCOL.parse_messages(ours) == ([expected], len(ours))
    assert ours.endswith(b"\x1e")
    ours_obj = orjson.loads(ours[:-1])
    assert ours_obj == orjson.loads(js_bytes[:-1])
    assert next(iter(ours_obj)) == "type"


@pytest.mark.parametrize("vector", WRITE_VECTORS, ids=ids(WRITE_VECTORS))
def test_write_vector_messagepack(vector: dict[str, Any]) -> None:
    expected = from_js(vector["message"])
    js_bytes = bytes.fromhex(vector["messagepack_hex"])

    assert MESSAGEPACK_PROTOCOL.parse_messages(js_bytes) == ([expected], len(js_bytes))

    ours = MESSAGEPACK_PROTOCOL.write_message(expected)
    assert MESSAGEPACK_PROTOCOL.parse_messages(ours) == ([expected], len(ours))
    # Byte-identical to the client's bytes once its short layouts are lengthened.
    assert ours == server_layout(js_bytes)
    if expected.type not in (INVOCATION, STREAM_INVOCATION, CLOSE):
        assert ours == js_bytes


# --- "parse" vectors: server-shaped bytes the JS client reads -----------------------------------


@pytest.mark.parametrize("vector", JSON_PARSE_VECTORS, ids=ids(JSON_PARSE_VECTORS))
def test_parse_vector_json(vector: dict[str, Any]) -> None:
    data = vector["input"].encode("utf-8")
    expected = [from_js(d) for d in vector["parsed"]]
    assert JSON_PROTOCOL.parse_messages(data) == (expected, len(data))
    # Our writer produces exactly these bytes (type first, optional keys omitted).
    assert b"".join(JSON_PROTOCOL.write_message(m) for m in expected) == data


@pytest.mark.parametrize("vector", MSGPACK_PARSE_VECTORS, ids=ids(MSGPACK_PARSE_VECTORS))
def test_parse_vector_messagepack(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["input_hex"])
    expected = [from_js(d) for d in vector["parsed"]]
    assert MESSAGEPACK_PROTOCOL.parse_messages(data) == (expected, len(data))
    ours = b"".join(MESSAGEPACK_PROTOCOL.write_message(m) for m in expected)
    # Identical where the vector already uses the server layout; the vectors' Invocations
    # have 5 elements, which we (like the reference server) write with a 6th, empty array.
    assert ours == server_layout(data)
    if not any(m.type in (INVOCATION, STREAM_INVOCATION) for m in expected):
        assert ours == data
    assert MESSAGEPACK_PROTOCOL.parse_messages(ours) == (expected, len(ours))


# --- Section 10 traces that are not in the JSON file --------------------------------------------

# 10.1: what the JS client writes (JSON), with the messages they mean.
CLIENT_JSON_TRACE: list[tuple[str, HubMessage]] = [
    ('{"type":6}', PING_MESSAGE),
    ('{"target":"Add","arguments":[1,2],"invocationId":"0","type":1}', InvocationMessage("Add", [1, 2], "0")),
    ('{"target":"Fire","arguments":["x"],"type":1}', InvocationMessage("Fire", ["x"])),
    ('{"target":"Counter","arguments":[3],"invocationId":"1","type":4}', StreamInvocationMessage("1", "Counter", [3])),
    ('{"target":"Upload","arguments":[],"streamIds":["2"],"type":1}', InvocationMessage("Upload", [], None, ["2"])),
    ('{"invocationId":"2","item":1,"type":2}', StreamItemMessage("2", 1)),
    ('{"invocationId":"2","type":3}', CompletionMessage("2")),
    ('{"invocationId":"1","type":5}', CancelInvocationMessage("1")),
    ('{"invocationId":"s1","result":42,"type":3}', CompletionMessage.with_result("s1", 42)),
    ('{"error":"Client didn\'t provide a result.","invocationId":"s2","type":3}', CompletionMessage.with_error("s2", "Client didn't provide a result.")),
    ('{"type":7}', CloseMessage()),
]  # fmt: skip


def test_client_json_trace_section_10_1() -> None:
    handshake = b'{"protocol":"json","version":1}\x1e'
    stream = handshake + b"".join(text.encode() + b"\x1e" for text, _ in CLIENT_JSON_TRACE)
    request, consumed = parse_handshake_request(stream)
    assert request == HandshakeRequest("json", 1)
    assert consumed == len(handshake)
    messages, used = JSON_PROTOCOL.parse_messages(stream[consumed:])
    assert messages == [m for _, m in CLIENT_JSON_TRACE]
    assert used == len(stream) - consumed


# 10.2: what a conforming server writes (JSON) -- our writer must produce exactly these.
SERVER_JSON_TRACE: list[tuple[str, HubMessage]] = [
    ('{"type":1,"target":"receiveMessage","arguments":["hi"]}', InvocationMessage("receiveMessage", ["hi"])),
    ('{"type":3,"invocationId":"0","result":3}', CompletionMessage.with_result("0", 3)),
    ('{"type":3,"invocationId":"0"}', CompletionMessage.empty("0")),
    ('{"type":3,"invocationId":"0","error":"Failed to invoke \'Nope\' due to an error on the server. HubException: Method does not exist."}', CompletionMessage.with_error("0", "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.")),
    ('{"type":2,"invocationId":"1","item":0}', StreamItemMessage("1", 0)),
    ('{"type":3,"invocationId":"1"}', CompletionMessage.empty("1")),
    ('{"type":1,"invocationId":"s1","target":"getAnswer","arguments":[]}', InvocationMessage("getAnswer", [], "s1")),
    ('{"type":6}', PING_MESSAGE),
    ('{"type":7,"error":"Connection closed with an error.","allowReconnect":true}', CloseMessage("Connection closed with an error.", True)),
    ('{"type":8,"sequenceId":12}', AckMessage(12)),
    ('{"type":9,"sequenceId":13}', SequenceMessage(13)),
    ('{"type":7}', CloseMessage()),
    ('{"type":7,"error":"x"}', CloseMessage("x")),
    ('{"type":1,"headers":{"a":"b"},"invocationId":"s2","target":"t","arguments":[],"streamIds":["3"]}', InvocationMessage("t", [], "s2", ["3"], {"a": "b"})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"), SERVER_JSON_TRACE, ids=[t for t, _ in SERVER_JSON_TRACE]
)
def test_server_json_trace_section_10_2(text: str, message: HubMessage) -> None:
    data = text.encode() + b"\x1e"
    assert JSON_PROTOCOL.write_message(message) == data
    assert JSON_PROTOCOL.parse_messages(data) == ([message], len(data))


# 10.3: the JS client's MessagePack bytes (ours differ only in the 6-element Invocation and
# 3-element Close layouts), plus the server bytes quoted there.
CLIENT_MSGPACK_TRACE: list[tuple[str, HubMessage]] = [
    ("0c 95 01 80 a1 30 a3 41 64 64 92 01 02", InvocationMessage("Add", [1, 2], "0")),
    ("0c 95 01 80 c0 a4 46 69 72 65 91 a1 78", InvocationMessage("Fire", ["x"])),
    ("0f 96 01 80 c0 a6 55 70 6c 6f 61 64 90 91 a1 32", InvocationMessage("Upload", [], None, ["2"])),
    ("0f 95 04 80 a1 31 a7 43 6f 75 6e 74 65 72 91 03", StreamInvocationMessage("1", "Counter", [3])),
    ("06 94 02 80 a1 32 01", StreamItemMessage("2", 1)),
    ("08 95 03 80 a2 73 31 03 2a", CompletionMessage.with_result("s1", 42)),
    ("0c 95 03 80 a2 73 32 01 a4 62 6f 6f 6d", CompletionMessage.with_error("s2", "boom")),
    ("06 94 03 80 a1 32 02", CompletionMessage.empty("2")),
    ("08 95 03 80 a2 73 33 03 c0", CompletionMessage.with_result("s3", None)),
    ("05 93 05 80 a1 31", CancelInvocationMessage("1")),
    ("02 91 06", PING_MESSAGE),
    ("03 92 07 c0", CloseMessage()),
    ("03 92 08 05", AckMessage(5)),
    ("03 92 09 01", SequenceMessage(1)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("hex_", "message"), CLIENT_MSGPACK_TRACE, ids=[h for h, _ in CLIENT_MSGPACK_TRACE]
)
def test_client_msgpack_trace_section_10_3(hex_: str, message: HubMessage) -> None:
    data = bytes.fromhex(hex_)
    assert MESSAGEPACK_PROTOCOL.parse_messages(data) == ([message], len(data))
    assert MESSAGEPACK_PROTOCOL.write_message(message) == server_layout(data)


SERVER_MSGPACK_BYTES: list[tuple[str, HubMessage]] = [
    ("04 93 07 c0 c3", CloseMessage(None, True)),
    ("04 93 07 c0 c2", CloseMessage()),
    ("03 92 08 05", AckMessage(5)),
    ("03 92 09 01", SequenceMessage(1)),
    ("02 91 06", PING_MESSAGE),
    ("18 96 01 80 c0 ae 72 65 63 65 69 76 65 4d 65 73 73 61 67 65 91 a2 68 69 90", InvocationMessage("receiveMessage", ["hi"])),
    ("12 96 01 80 a2 73 31 a9 67 65 74 41 6e 73 77 65 72 90 90", InvocationMessage("getAnswer", [], "s1")),
    ("0b 95 03 81 a1 61 a1 62 a1 31 03 2a", CompletionMessage("1", None, 42, True, {"a": "b"})),
    ("09 93 07 a5 65 72 72 6f 72 c2", CloseMessage("error")),
    ("0b 92 08 cf 00 00 00 01 00 00 00 00", AckMessage(2**32)),
    ("05 92 09 cd 01 00", SequenceMessage(256)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("hex_", "message"), SERVER_MSGPACK_BYTES, ids=[h for h, _ in SERVER_MSGPACK_BYTES]
)
def test_server_msgpack_bytes(hex_: str, message: HubMessage) -> None:
    data = bytes.fromhex(hex_)
    assert MESSAGEPACK_PROTOCOL.write_message(message) == data
    assert MESSAGEPACK_PROTOCOL.parse_messages(data) == ([message], len(data))
