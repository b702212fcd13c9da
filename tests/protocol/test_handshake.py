"""The handshake request parser and the handshake reply writer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backplane.errors import MessageTooLargeError, ProtocolError
from backplane.protocol import (
    HANDSHAKE_SUCCESS,
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    PING_MESSAGE,
    HandshakeRequest,
    parse_handshake_request,
    write_handshake_response,
)


def test_json_client_handshake() -> None:
    data = b'{"protocol":"json","version":1}\x1e'
    assert parse_handshake_request(data) == (HandshakeRequest("json", 1), len(data))


def test_messagepack_stateful_handshake_with_following_messages() -> None:
    handshake = b'{"protocol":"messagepack","version":2}\x1e'
    data = handshake + b"\x02\x91\x06"
    request, consumed = parse_handshake_request(data)
    assert request == HandshakeRequest("messagepack", 2)
    assert consumed == len(handshake)
    assert MESSAGEPACK_PROTOCOL.parse_messages(data[consumed:]) == ([PING_MESSAGE], 3)


def test_handshake_then_json_messages_in_one_chunk() -> None:
    data = b'{"version":1,"protocol":"json","extra":[1]}\x1e{"type":6}\x1e'
    request, consumed = parse_handshake_request(bytearray(data))
    assert request == HandshakeRequest("json", 1)
    assert JSON_PROTOCOL.parse_messages(memoryview(data)[consumed:]) == ([PING_MESSAGE], 11)


@pytest.mark.parametrize(
    "data", [b"", b'{"protocol":"json"', b'{"protocol":"json","version":1}', b"garbage"]
)
def test_incomplete_handshake(data: bytes) -> None:
    assert parse_handshake_request(data) == (None, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b'{"protocol":"\xc3\x28","version":1}',
        b"[]",
        b"null",
        b'"json"',
        b"{}",
        b'{"version":1}',
        b'{"protocol":"json"}',
        b'{"protocol":null,"version":1}',
        b'{"protocol":1,"version":1}',
        b'{"protocol":["json"],"version":1}',
        b'{"protocol":"json","version":null}',
        b'{"protocol":"json","version":"1"}',
        b'{"protocol":"json","version":1.0}',
        b'{"protocol":"json","version":true}',
        b'{"protocol":"json","version":1',
        b'{"type":1,"target":"x","arguments":[]}',
    ],
)
def test_malformed_handshake(body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_handshake_request(body + b'\x1e{"type":6}\x1e')
    assert type(info.value) is ProtocolError


def test_handshake_max_size() -> None:
    body = b'{"protocol":"json","version":1}'
    data = body + b"\x1e"
    assert parse_handshake_request(data, max_size=len(body))[1] == len(data)
    with pytest.raises(MessageTooLargeError):
        parse_handshake_request(data, max_size=len(body) - 1)
    # No separator yet, but already over the limit.
    with pytest.raises(MessageTooLargeError):
        parse_handshake_request(body, max_size=len(body) - 1)
    assert parse_handshake_request(body, max_size=len(body)) == (None, 0)


def test_handshake_responses() -> None:
    assert HANDSHAKE_SUCCESS == b"{}\x1e"
    assert write_handshake_response() == b"{}\x1e"
    assert write_handshake_response(None) == b"{}\x1e"
    assert (
        write_handshake_response("The protocol 'xml' is not supported.")
        == b'{"error":"The protocol \'xml\' is not supported."}\x1e'
    )
    # Quotes escaped, and ASCII only (the MessagePack JS client decodes the reply byte-wise).
    reply = write_handshake_response('Bad "ü" \x1e')
    assert reply.endswith(b"\x1e") and reply.count(b"\x1e") == 1
    assert reply.isascii()
    assert json.loads(reply[:-1]) == {"error": 'Bad "ü" \x1e'}


@given(st.binary(max_size=120), st.one_of(st.none(), st.integers(0, 100)))
@settings(max_examples=2000, deadline=None)
def test_fuzz_handshake(data: bytes, limit: int | None) -> None:
    for candidate in (data, data + b"\x1e"):
        try:
            request, consumed = parse_handshake_request(candidate, limit)
        except ProtocolError:
            continue
        if request is None:
            assert consumed == 0
        else:
            assert candidate[consumed - 1] == 0x1E
            assert isinstance(request.protocol, str) and type(request.version) is int


@given(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.integers(-(2**63), 2**63 - 1),
)
def test_handshake_round_trip(protocol: str, version: int) -> None:
    data = json.dumps({"protocol": protocol, "version": version}).encode() + b"\x1e"
    assert parse_handshake_request(data) == (HandshakeRequest(protocol, version), len(data))
