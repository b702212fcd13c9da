"""Golden bytes of the Redis backplane wire format (backplane/redis/wire.py).

Every expected byte string below is written out by hand from the ASP.NET Core sources
(dotnet/aspnetcore, src/SignalR/server/StackExchangeRedis: RedisProtocol.cs, RedisChannels.cs,
RedisHubLifetimeManager.cs and test/RedisProtocolTests.cs, whose vectors are reproduced here)
and from the worked examples of the shared notes on the wire format. Where a reader could be
stricter than .NET's, the tests pin the .NET behaviour (lenient where .NET is lenient).

The hub-protocol bodies inside the messages are built with our own codecs, and their bytes
are pinned too, so a change in a codec shows up here as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backplane import Hub
from backplane.errors import ProtocolError
from backplane.hub import hub_wire_name
from backplane.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
)
from backplane.redis.wire import (
    CONTROL_ABORT_CONNECTION,
    CONTROL_ABORT_USER,
    GROUP_ADD,
    GROUP_REMOVE,
    Channels,
    GroupCommand,
    WireError,
    next_command_id,
    read_ack,
    read_completion,
    read_control,
    read_group_command,
    read_invocation,
    write_ack,
    write_completion,
    write_control,
    write_group_command,
    write_invocation,
)

HUB = "MyApp.Hubs.ChatHub"


def h(text: str) -> bytes:
    """Bytes from spaced hex, as the vectors are written in the .NET tests and the notes."""
    return bytes.fromhex(text)


def fixstr(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) <= 31
    return bytes([0xA0 | len(raw)]) + raw


def bin8(body: bytes) -> bytes:
    assert len(body) <= 255
    return b"\xc4" + bytes([len(body)]) + body


# The two hub-protocol bodies of ``Clients.All.SendAsync("Send", "hi")``.
SEND_HI = InvocationMessage("Send", ["hi"])
SEND_HI_JSON = b'{"type":1,"target":"Send","arguments":["hi"]}\x1e'
SEND_HI_MSGPACK = h("0e 96 01 80 c0 a4 53 65 6e 64 91 a2 68 69 90")
SEND_HI_PAYLOADS = {"json": SEND_HI_JSON, "messagepack": SEND_HI_MSGPACK}
# [[], {"json": bin(46), "messagepack": bin(15)}]
SEND_HI_BYTES = (
    h("92 90 82")
    + h("a4 6a 73 6f 6e")
    + h("c4 2e")
    + SEND_HI_JSON
    + h("ab 6d 65 73 73 61 67 65 70 61 63 6b")
    + h("c4 0f")
    + SEND_HI_MSGPACK
)


# --------------------------------------------------------------------------- channels


def test_channel_names_without_prefix() -> None:
    ch = Channels(HUB)
    assert ch.prefix == b""
    assert ch.base == b"MyApp.Hubs.ChatHub"
    assert ch.all == b"MyApp.Hubs.ChatHub:all"
    assert ch.internal_groups == b"MyApp.Hubs.ChatHub:internal:groups"
    assert ch.connection("c1") == b"MyApp.Hubs.ChatHub:connection:c1"
    assert ch.group("room") == b"MyApp.Hubs.ChatHub:group:room"
    assert ch.user("alice") == b"MyApp.Hubs.ChatHub:user:alice"
    assert ch.ack("srv") == b"MyApp.Hubs.ChatHub:internal:ack:srv"
    assert ch.return_channel("srv") == b"MyApp.Hubs.ChatHub:internal:return:srv"
    assert ch.control == b"MyApp.Hubs.ChatHub:hubplane:control"


@pytest.mark.parametrize("prefix", ["MyApp", b"MyApp"])
def test_channel_prefix_is_glued_on_without_separator(prefix: str | bytes) -> None:
    # StackExchange.Redis prepends ChannelPrefix as raw bytes, with no separator.
    ch = Channels(HUB, prefix)
    assert ch.prefix == b"MyApp"
    assert ch.all == b"MyAppMyApp.Hubs.ChatHub:all"
    assert ch.internal_groups == b"MyAppMyApp.Hubs.ChatHub:internal:groups"
    assert ch.connection("c1") == b"MyAppMyApp.Hubs.ChatHub:connection:c1"
    assert ch.group("room") == b"MyAppMyApp.Hubs.ChatHub:group:room"
    assert ch.user("alice") == b"MyAppMyApp.Hubs.ChatHub:user:alice"
    assert ch.ack("srv") == b"MyAppMyApp.Hubs.ChatHub:internal:ack:srv"
    assert ch.return_channel("srv") == b"MyAppMyApp.Hubs.ChatHub:internal:return:srv"
    assert ch.control == b"MyAppMyApp.Hubs.ChatHub:hubplane:control"


def test_prefix_with_its_own_separator_is_kept_verbatim() -> None:
    assert Channels(HUB, "tenant1:").all == b"tenant1:MyApp.Hubs.ChatHub:all"
    assert Channels(HUB, b"\x00\xff").all == b"\x00\xffMyApp.Hubs.ChatHub:all"


def test_nested_dotnet_class_names_use_plus() -> None:
    # typeof(THub).FullName of a nested class is "Namespace.Outer+Inner".
    ch = Channels("MyApp.Outer+ChatHub", "MyApp")
    assert ch.all == b"MyAppMyApp.Outer+ChatHub:all"
    assert ch.group("room") == b"MyAppMyApp.Outer+ChatHub:group:room"
    assert ch.return_channel_name("s") == "MyApp.Outer+ChatHub:internal:return:s"


def test_return_channel_name_inside_invocations_has_no_prefix() -> None:
    # RedisChannels.ReturnResults = hub + ":internal:return:" + serverName; the prefix is added
    # by StackExchange.Redis when the owner publishes to it, so it is not in the message.
    ch = Channels(HUB, "MyApp")
    assert ch.return_channel_name("srv") == "MyApp.Hubs.ChatHub:internal:return:srv"
    assert ch.return_channel("srv") == b"MyApp" + ch.return_channel_name("srv").encode()
    assert Channels(HUB).return_channel_name("srv") == "MyApp.Hubs.ChatHub:internal:return:srv"


def test_names_are_utf8_and_case_sensitive() -> None:
    ch = Channels(HUB)
    assert ch.group("café") == b"MyApp.Hubs.ChatHub:group:caf\xc3\xa9"
    assert ch.group("Room") != ch.group("room")
    assert Channels("Ünï.Hub").all == "Ünï.Hub:all".encode()


class _Outer:
    class NestedHub(Hub):
        pass


class _DefaultNameHub(Hub):
    pass


class _NamedHub(Hub):
    wire_name = "MyApp.Hubs.ChatHub"


class _ChildOfNamedHub(_NamedHub):
    pass


def test_hub_wire_name_default_and_override() -> None:
    assert hub_wire_name(_DefaultNameHub) == f"{__name__}._DefaultNameHub"
    # A Python nested class keeps its dotted __qualname__ (no '+' as in .NET).
    assert hub_wire_name(_Outer.NestedHub) == f"{__name__}._Outer.NestedHub"
    assert hub_wire_name(_NamedHub) == "MyApp.Hubs.ChatHub"
    # wire_name is read from the class itself, not inherited.
    assert hub_wire_name(_ChildOfNamedHub) == f"{__name__}._ChildOfNamedHub"
    assert Channels(hub_wire_name(_NamedHub), "MyApp").all == b"MyAppMyApp.Hubs.ChatHub:all"


# --------------------------------------------------------------------------- invocations

# RedisProtocolTests.cs: a dummy protocol writes the single byte 0x2A for "p1" and "p2".
DOTNET_INVOCATIONS = {
    "NoExcludedIds": (None, "92 90 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a"),
    "OneExcludedId": (["a"], "92 91 a1 61 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a"),
    "ManyExcludedIds": (
        ["a", "b", "c", "d", "e", "f"],
        "92 96 a1 61 a1 62 a1 63 a1 64 a1 65 a1 66 82 a2 70 31 c4 01 2a a2 70 32 c4 01 2a",
    ),
}
DUMMY_PAYLOADS = {"p1": b"\x2a", "p2": b"\x2a"}


@pytest.mark.parametrize("name", sorted(DOTNET_INVOCATIONS))
def test_dotnet_invocation_vectors(name: str) -> None:
    excluded, hex_bytes = DOTNET_INVOCATIONS[name]
    expected = h(hex_bytes)
    assert write_invocation(DUMMY_PAYLOADS, excluded) == expected
    decoded = read_invocation(expected)
    assert decoded.excluded == excluded
    assert decoded.payloads == DUMMY_PAYLOADS
    assert list(decoded.payloads) == ["p1", "p2"]
    assert decoded.invocation_id is None
    assert decoded.return_channel is None
    assert decoded.origin is None


def test_empty_exclusion_list_is_written_as_empty_array() -> None:
    assert write_invocation(DUMMY_PAYLOADS, []) == write_invocation(DUMMY_PAYLOADS, None)
    assert write_invocation(DUMMY_PAYLOADS, ())[:2] == h("92 90")


def test_protocol_bodies_of_send_hi() -> None:
    assert JSON_PROTOCOL.write_message(SEND_HI) == SEND_HI_JSON
    assert len(SEND_HI_JSON) == 0x2E
    assert MESSAGEPACK_PROTOCOL.write_message(SEND_HI) == SEND_HI_MSGPACK
    assert len(SEND_HI_MSGPACK) == 0x0F


def test_broadcast_send_hi_json_and_messagepack() -> None:
    payloads = {
        "json": JSON_PROTOCOL.write_message(SEND_HI),
        "messagepack": MESSAGEPACK_PROTOCOL.write_message(SEND_HI),
    }
    encoded = write_invocation(payloads)
    assert encoded == SEND_HI_BYTES
    assert len(encoded) == 3 + 5 + 2 + 46 + 12 + 2 + 15
    decoded = read_invocation(SEND_HI_BYTES)
    assert decoded.excluded is None
    assert decoded.payloads == SEND_HI_PAYLOADS
    assert decoded.invocation_id is None and decoded.return_channel is None
    # The bodies are what a client would receive: they parse back to the invocation.
    assert JSON_PROTOCOL.parse_messages(decoded.payloads["json"]) == ([SEND_HI], 46)
    assert MESSAGEPACK_PROTOCOL.parse_messages(decoded.payloads["messagepack"]) == ([SEND_HI], 15)


def test_all_except_c1() -> None:
    expected = h("92 91 a2 63 31") + SEND_HI_BYTES[2:]
    assert write_invocation(SEND_HI_PAYLOADS, ["c1"]) == expected
    decoded = read_invocation(expected)
    assert decoded.excluded == ["c1"]
    assert decoded.payloads == SEND_HI_PAYLOADS


def test_several_excluded_ids_keep_their_order() -> None:
    ids = ["c2", "c1", "Zm9vYmFyYmF6cXV4cXV1eA"]  # the last one is a .NET-style 22-char id
    expected = (
        h("92 93 a2 63 32 a2 63 31 b6")
        + b"Zm9vYmFyYmF6cXV4cXV1eA"
        + h("81 a4 6a 73 6f 6e")
        + bin8(SEND_HI_JSON)
    )
    assert write_invocation({"json": SEND_HI_JSON}, ids) == expected
    assert read_invocation(expected).excluded == ids


def test_sixteen_excluded_ids_use_array16() -> None:
    ids = [f"c{i}" for i in range(16)]
    encoded = write_invocation({"json": SEND_HI_JSON}, ids)
    assert encoded[:4] == h("92 dc 00 10")
    assert read_invocation(encoded).excluded == ids


def test_long_payload_uses_bin16() -> None:
    body = b"x" * 300
    encoded = write_invocation({"json": body})
    assert encoded == h("92 90 81 a4 6a 73 6f 6e c5 01 2c") + body
    assert read_invocation(encoded).payloads == {"json": body}


ASK = InvocationMessage("GetName", [], invocation_id="abc")
ASK_JSON = b'{"type":1,"invocationId":"abc","target":"GetName","arguments":[]}\x1e'
ASK_MSGPACK = h("11 96 01 80 a3 61 62 63 a7 47 65 74 4e 61 6d 65 90 90")
RETURN_CHANNEL = "MyApp.Hubs.ChatHub:internal:return:srv"


def test_client_result_invocation_has_four_elements() -> None:
    assert JSON_PROTOCOL.write_message(ASK) == ASK_JSON
    assert MESSAGEPACK_PROTOCOL.write_message(ASK) == ASK_MSGPACK
    assert Channels(HUB, "MyApp").return_channel_name("srv") == RETURN_CHANNEL
    expected = (
        h("94 90 82 a4 6a 73 6f 6e")
        + bin8(ASK_JSON)
        + h("ab 6d 65 73 73 61 67 65 70 61 63 6b")
        + bin8(ASK_MSGPACK)
        + h("a3 61 62 63")  # invocationId
        + h("d9 26")  # str8: the return channel is 38 bytes
        + RETURN_CHANNEL.encode()
    )
    payloads = {"json": ASK_JSON, "messagepack": ASK_MSGPACK}
    encoded = write_invocation(payloads, invocation_id="abc", return_channel=RETURN_CHANNEL)
    assert encoded == expected
    decoded = read_invocation(expected)
    assert decoded.excluded is None
    assert decoded.payloads == payloads
    assert decoded.invocation_id == "abc"
    assert decoded.return_channel == RETURN_CHANNEL
    assert decoded.origin is None


def test_return_channel_decides_the_four_element_form() -> None:
    # .NET: `if (!string.IsNullOrEmpty(returnChannel)) writer.WriteArrayHeader(4)`; the id is
    # written as is (nil when null).
    assert write_invocation({}, invocation_id="abc") == h("92 90 80")
    assert write_invocation({}, invocation_id="abc", return_channel="") == h("92 90 80")
    assert write_invocation({}, return_channel="r") == h("94 90 80 c0 a1 72")
    decoded = read_invocation(h("94 90 80 c0 a1 72"))
    assert decoded.invocation_id is None
    assert decoded.return_channel == "r"


def test_origin_makes_five_elements_with_nils() -> None:
    expected = h("95 90 81 a4 6a 73 6f 6e") + bin8(SEND_HI_JSON) + h("c0 c0 a6 6e 6f 64 65 2d 61")
    encoded = write_invocation({"json": SEND_HI_JSON}, origin="node-a")
    assert encoded == expected
    decoded = read_invocation(expected)
    assert decoded.origin == "node-a"
    # A .NET reader sees length > 3 and reads nil, nil: no client result, a plain invocation.
    assert decoded.invocation_id is None
    assert decoded.return_channel is None
    assert decoded.payloads == {"json": SEND_HI_JSON}


def test_origin_after_client_result_fields() -> None:
    expected = (
        h("95 91 a2 63 31 81 a4 6a 73 6f 6e")
        + bin8(ASK_JSON)
        + h("a3 61 62 63 d9 26")
        + RETURN_CHANNEL.encode()
        + h("a1 6e")
    )
    encoded = write_invocation(
        {"json": ASK_JSON}, ["c1"], invocation_id="abc", return_channel=RETURN_CHANNEL, origin="n"
    )
    assert encoded == expected
    decoded = read_invocation(expected)
    assert (decoded.excluded, decoded.invocation_id, decoded.return_channel, decoded.origin) == (
        ["c1"],
        "abc",
        RETURN_CHANNEL,
        "n",
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["abc", RETURN_CHANNEL, "origin", 42, {"future": [1, 2]}, None],
        ["abc", RETURN_CHANNEL, None, b"\x00"],
    ],
    ids=["seven", "six"],
)
def test_invocation_reader_ignores_extra_trailing_elements(extra: list[Any]) -> None:
    data = msgpack.packb([["c1"], {"json": SEND_HI_JSON}, *extra], use_bin_type=True)
    decoded = read_invocation(data)
    assert decoded.excluded == ["c1"]
    assert decoded.payloads == {"json": SEND_HI_JSON}
    assert decoded.invocation_id == "abc"
    assert decoded.return_channel == RETURN_CHANNEL


def test_three_element_invocation_ignores_the_third() -> None:
    # .NET reads the invocation id and return channel only when the length is > 3.
    for third in (h("a1 78"), h("2a"), h("80")):
        decoded = read_invocation(h("93 90 80") + third)
        assert decoded.payloads == {}
        assert decoded.invocation_id is None and decoded.return_channel is None


def test_nil_payload_reads_as_empty_bytes() -> None:
    # .NET: `reader.ReadBytes()?.ToArray() ?? Array.Empty<byte>()`
    assert read_invocation(h("92 90 81 a4 6a 73 6f 6e c0")).payloads == {"json": b""}


def test_invocation_decodes_any_container_width() -> None:
    # array16 / map16 / bin32 headers for small values: MessagePack readers accept them all.
    data = h("dc 00 02 dd 00 00 00 01 a2 63 31 de 00 01 a4 6a 73 6f 6e c6 00 00 00 01 2a")
    decoded = read_invocation(data)
    assert decoded.excluded == ["c1"]
    assert decoded.payloads == {"json": b"\x2a"}


# --------------------------------------------------------------------------- group commands

# RedisProtocolTests.cs
DOTNET_GROUP_COMMANDS = {
    "GroupAdd": (GroupCommand(42, "S", GROUP_ADD, "G", "C"), "95 2a a1 53 01 a1 47 a1 43"),
    "GroupRemove": (GroupCommand(42, "S", GROUP_REMOVE, "G", "C"), "95 2a a1 53 02 a1 47 a1 43"),
}


@pytest.mark.parametrize("name", sorted(DOTNET_GROUP_COMMANDS))
def test_dotnet_group_command_vectors(name: str) -> None:
    command, hex_bytes = DOTNET_GROUP_COMMANDS[name]
    assert write_group_command(command) == h(hex_bytes)
    assert read_group_command(h(hex_bytes)) == command


def test_group_command_example() -> None:
    command = GroupCommand(7, "srv", GROUP_ADD, "room", "c1")
    expected = h("95 07 a3 73 72 76 01 a4 72 6f 6f 6d a2 63 31")
    assert write_group_command(command) == expected
    decoded = read_group_command(expected)
    assert decoded == command
    assert (decoded.id, decoded.server, decoded.action, decoded.group, decoded.connection_id) == (
        7,
        "srv",
        1,
        "room",
        "c1",
    )


def test_group_command_with_real_server_name_uses_str8() -> None:
    # Server names are MachineName + "_" + 32 hex digits: longer than a fixstr's 31 bytes.
    server = "web-5f7c9_0f3a1b2c3d4e5f60718293a4b5c6d7e1"
    assert len(server) == 42
    command = GroupCommand(300, server, GROUP_REMOVE, "room", "c1")
    expected = h("95 cd 01 2c d9 2a") + server.encode() + h("02 a4 72 6f 6f 6d a2 63 31")
    assert write_group_command(command) == expected
    assert read_group_command(expected) == command


def test_group_command_reader_accepts_any_int_width_and_extra_elements() -> None:
    # id 42 as uint64, action 1 as uint8, then two trailing elements a newer writer might add.
    data = h("97 cf 00 00 00 00 00 00 00 2a a1 53 cc 01 a1 47 a1 43 c3 80")
    assert read_group_command(data) == GroupCommand(42, "S", GROUP_ADD, "G", "C")
    # Int32 ids may be negative (Interlocked.Increment wraps around).
    data = h("95 d2 80 00 00 00 a1 53 02 a1 47 a1 43")
    assert read_group_command(data) == GroupCommand(-(2**31), "S", GROUP_REMOVE, "G", "C")


def test_group_command_writer_rejects_unknown_actions() -> None:
    with pytest.raises(ValueError):
        write_group_command(GroupCommand(1, "S", 0, "G", "C"))
    with pytest.raises(ValueError):
        write_group_command(GroupCommand(1, "S", 3, "G", "C"))


def test_next_command_id_stays_a_positive_int32() -> None:
    assert next_command_id(0) == 1
    assert next_command_id(41) == 42
    assert next_command_id(2**31 - 2) == 2**31 - 1
    assert next_command_id(2**31 - 1) == 1


# --------------------------------------------------------------------------- acks

# RedisProtocolTests.cs, then the notes' examples.
ACK_VECTORS = [
    (0, "91 00"),
    (42, "91 2a"),
    (180, "91 cc b4"),
    (384, "91 cd 01 80"),
    (70_000, "91 ce 00 01 11 70"),
    (7, "91 07"),
    (300, "91 cd 01 2c"),
    (2**31 - 1, "91 ce 7f ff ff ff"),
]


@pytest.mark.parametrize(("command_id", "hex_bytes"), ACK_VECTORS)
def test_ack_vectors(command_id: int, hex_bytes: str) -> None:
    assert write_ack(command_id) == h(hex_bytes)
    assert read_ack(h(hex_bytes)) == command_id


@pytest.mark.parametrize(
    "hex_bytes",
    [
        "91 07",
        "91 cc 07",
        "91 cd 00 07",
        "91 ce 00 00 00 07",
        "91 cf 00 00 00 00 00 00 00 07",
        "91 d0 07",
        "91 d1 00 07",
        "91 d2 00 00 00 07",
        "91 d3 00 00 00 00 00 00 00 07",
        "dc 00 01 07",
        "dd 00 00 00 01 07",
        "92 07 a1 78",
    ],
)
def test_ack_reader_accepts_any_int_width(hex_bytes: str) -> None:
    assert read_ack(h(hex_bytes)) == 7


def test_ack_reader_accepts_negative_int32() -> None:
    assert read_ack(h("91 ff")) == -1
    assert read_ack(h("91 d2 80 00 00 00")) == -(2**31)


# --------------------------------------------------------------------------- completions

ANSWER = CompletionMessage.with_result("abc", 42)
ANSWER_JSON = b'{"type":3,"invocationId":"abc","result":42}\x1e'
ANSWER_MSGPACK = h("09 95 03 80 a3 61 62 63 03 2a")


def test_completion_json_example() -> None:
    assert JSON_PROTOCOL.write_message(ANSWER) == ANSWER_JSON
    assert len(ANSWER_JSON) == 0x2C
    expected = h("92 a4 6a 73 6f 6e c4 2c") + ANSWER_JSON
    assert write_completion("json", JSON_PROTOCOL.write_message(ANSWER)) == expected
    name, body = read_completion(expected)
    assert (name, body) == ("json", ANSWER_JSON)
    assert JSON_PROTOCOL.parse_messages(body) == ([ANSWER], len(body))


COMPLETIONS: list[tuple[str, HubMessage, str]] = [
    ("result", ANSWER, "09 95 03 80 a3 61 62 63 03 2a"),
    (
        "error",
        CompletionMessage.with_error("abc", "boom"),
        "0d 95 03 80 a3 61 62 63 01 a4 62 6f 6f 6d",
    ),
    ("void", CompletionMessage.empty("abc"), "08 94 03 80 a3 61 62 63 02"),
    ("null result", CompletionMessage.with_result("abc", None), "09 95 03 80 a3 61 62 63 03 c0"),
]


@pytest.mark.parametrize(
    ("kind", "message", "body_hex"), COMPLETIONS, ids=[c[0] for c in COMPLETIONS]
)
def test_completion_messagepack(kind: str, message: HubMessage, body_hex: str) -> None:
    body = MESSAGEPACK_PROTOCOL.write_message(message)
    assert body == h(body_hex)
    expected = h("92 ab 6d 65 73 73 61 67 65 70 61 63 6b") + bin8(body)
    assert write_completion("messagepack", body) == expected
    name, decoded = read_completion(expected)
    assert (name, decoded) == ("messagepack", body)
    assert MESSAGEPACK_PROTOCOL.parse_messages(decoded) == ([message], len(body))


def test_completion_json_error() -> None:
    body = JSON_PROTOCOL.write_message(
        CompletionMessage.with_error("abc", "Connection disconnected.")
    )
    assert body == b'{"type":3,"invocationId":"abc","error":"Connection disconnected."}\x1e'
    expected = h("92 a4 6a 73 6f 6e c4 43") + body
    assert write_completion("json", body) == expected
    assert read_completion(expected) == ("json", body)


def test_completion_reader_nil_body_and_extra_elements() -> None:
    # .NET: `reader.ReadBytes()` may be null -> an empty sequence.
    assert read_completion(h("92 a4 6a 73 6f 6e c0")) == ("json", b"")
    assert read_completion(h("93 a4 6a 73 6f 6e c4 01 2a 07")) == ("json", b"\x2a")


# --------------------------------------------------------------------------- control (ours)


def test_control_messages() -> None:
    abort_connection = h("92 01 a2 63 31")
    abort_user = h("92 02 a5 61 6c 69 63 65")
    assert write_control(CONTROL_ABORT_CONNECTION, "c1") == abort_connection
    assert write_control(CONTROL_ABORT_USER, "alice") == abort_user
    assert read_control(abort_connection) == (1, "c1")
    assert read_control(abort_user) == (2, "alice")
    assert read_control(h("93 01 a2 63 31 c3")) == (1, "c1")


# --------------------------------------------------------------------------- bad input

Reader = Callable[[bytes], Any]
READERS: dict[str, Reader] = {
    "invocation": read_invocation,
    "group_command": read_group_command,
    "ack": read_ack,
    "completion": read_completion,
    "control": read_control,
}
VALID: dict[str, bytes] = {
    "invocation": SEND_HI_BYTES,
    "group_command": h("95 07 a3 73 72 76 01 a4 72 6f 6f 6d a2 63 31"),
    "ack": h("91 cd 01 2c"),
    "completion": h("92 a4 6a 73 6f 6e c4 2c") + ANSWER_JSON,
    "control": h("92 01 a2 63 31"),
}


def test_wire_error_is_a_protocol_error() -> None:
    assert issubclass(WireError, ProtocolError)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_every_truncation_raises_wire_error(kind: str) -> None:
    reader, data = READERS[kind], VALID[kind]
    reader(data)
    for end in range(len(data)):
        with pytest.raises(WireError):
            reader(data[:end])


NOT_ARRAYS = [
    "",
    "c0",
    "07",
    "a3 61 62 63",
    "80",
    "c4 01 2a",
    "c3",
    "cb 40 09 21 fb 54 44 2d 18",
    "c1",
]


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("hex_bytes", NOT_ARRAYS)
def test_non_arrays_raise_wire_error(kind: str, hex_bytes: str) -> None:
    with pytest.raises(WireError):
        READERS[kind](h(hex_bytes))


@pytest.mark.parametrize(
    ("kind", "hex_bytes"),
    [
        ("invocation", "90"),
        ("invocation", "91 90"),
        ("group_command", "94 07 a1 53 01 a1 47"),
        ("ack", "90"),
        ("completion", "91 a4 6a 73 6f 6e"),
        ("control", "91 01"),
    ],
)
def test_short_arrays_raise_wire_error(kind: str, hex_bytes: str) -> None:
    with pytest.raises(WireError, match="Insufficient items"):
        READERS[kind](h(hex_bytes))


WRONG_TYPES = [
    # invocation: excluded not an array / an id not a string / payloads not a map /
    # a protocol name not a string / a body of the wrong type / a str invocation field wrong
    ("invocation", "92 c0 80"),
    ("invocation", "92 80 80"),
    ("invocation", "92 91 07 80"),
    ("invocation", "92 91 c4 01 61 80"),
    ("invocation", "92 90 90"),
    ("invocation", "92 90 c0"),
    ("invocation", "92 90 81 07 c4 01 2a"),
    ("invocation", "92 90 81 a4 6a 73 6f 6e 07"),
    ("invocation", "92 90 81 a4 6a 73 6f 6e 90"),
    ("invocation", "94 90 80 07 a1 72"),
    ("invocation", "94 90 80 a1 69 c4 01 72"),
    # group command: id / server / action / group / connection of the wrong type
    ("group_command", "95 a1 37 a1 53 01 a1 47 a1 43"),
    ("group_command", "95 ca 40 e0 00 00 a1 53 01 a1 47 a1 43"),
    ("group_command", "95 c3 a1 53 01 a1 47 a1 43"),
    ("group_command", "95 07 07 01 a1 47 a1 43"),
    ("group_command", "95 07 a1 53 a1 31 a1 47 a1 43"),
    ("group_command", "95 07 a1 53 01 90 a1 43"),
    ("group_command", "95 07 a1 53 01 a1 47 c4 01 43"),
    # ack: id not an integer
    ("ack", "91 a1 37"),
    ("ack", "91 c0"),
    ("ack", "91 c2"),
    ("ack", "91 cb 40 1c 00 00 00 00 00 00"),
    # completion: protocol name not a string / body not binary
    ("completion", "92 07 c4 01 2a"),
    ("completion", "92 a4 6a 73 6f 6e 07"),
    ("completion", "92 a4 6a 73 6f 6e 90"),
    # control: kind not an integer / target not a string
    ("control", "92 a1 31 a2 63 31"),
    ("control", "92 01 07"),
    ("control", "92 01 c0"),
]


@pytest.mark.parametrize(("kind", "hex_bytes"), WRONG_TYPES)
def test_wrong_types_raise_wire_error(kind: str, hex_bytes: str) -> None:
    with pytest.raises(WireError):
        READERS[kind](h(hex_bytes))


def test_str8_payload_is_accepted_where_dotnet_is_stricter() -> None:
    # MessagePack-CSharp's ReadBytes takes bin headers and, for the old spec, fixstr/str16/str32
    # (tested below), but not str8 (d9), which the old spec did not have. We read every str
    # header the same way: being more lenient here loses nothing.
    decoded = read_invocation(h("92 90 81 a4 6a 73 6f 6e d9 2e") + SEND_HI_JSON)
    assert decoded.payloads == {"json": SEND_HI_JSON}


def _check_reader(reader: Reader, data: bytes) -> None:
    try:
        reader(data)
    except WireError:
        pass


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_random_bytes_raise_only_wire_error(data: bytes) -> None:
    for reader in READERS.values():
        _check_reader(reader, data)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_fuzz_mutated_messages_raise_only_wire_error(kind: str, data: st.DataObject) -> None:
    raw = bytearray(VALID[kind])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    for reader in READERS.values():
        _check_reader(reader, bytes(raw))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.integers(-(2**63), 2**64 - 1)), inner, max_size=3
        ),
    ),
    max_leaves=12,
)


@FUZZ
@given(st.lists(_values, max_size=7))
def test_fuzz_structured_arrays_raise_only_wire_error(items: list[Any]) -> None:
    data = msgpack.packb(items, use_bin_type=True)
    for reader in READERS.values():
        _check_reader(reader, data)


@FUZZ
@given(
    st.lists(st.text(max_size=30), max_size=5),
    st.dictionaries(st.text(min_size=1, max_size=12), st.binary(max_size=300), max_size=3),
    st.one_of(st.none(), st.text(max_size=40)),
    st.one_of(st.none(), st.text(min_size=1, max_size=60)),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_fuzz_invocation_roundtrip(
    excluded: list[str],
    payloads: dict[str, bytes],
    invocation_id: str | None,
    return_channel: str | None,
    origin: str | None,
) -> None:
    data = write_invocation(payloads, excluded, invocation_id, return_channel, origin)
    decoded = read_invocation(data)
    assert decoded.excluded == (excluded or None)
    assert decoded.payloads == payloads
    assert decoded.return_channel == return_channel
    assert decoded.invocation_id == (invocation_id if return_channel else None)
    assert decoded.origin == origin


@FUZZ
@given(
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=60),
    st.sampled_from([GROUP_ADD, GROUP_REMOVE]),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_fuzz_group_command_and_ack_roundtrip(
    command_id: int, server: str, action: int, group: str, connection_id: str
) -> None:
    command = GroupCommand(command_id, server, action, group, connection_id)
    assert read_group_command(write_group_command(command)) == command
    assert read_ack(write_ack(command_id)) == command_id


# --------------------------------------------------------------------------- .NET disagreements
#
# Each test below states what the .NET reader does where a stricter reader would differ.


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (
            "invocation fixstr",
            h("92 90 81 ab 6d 65 73 73 61 67 65 70 61 63 6b af") + SEND_HI_MSGPACK,
            SEND_HI_MSGPACK,
        ),
        ("invocation str16", h("92 90 81 a4 6a 73 6f 6e da 00 2e") + SEND_HI_JSON, SEND_HI_JSON),
        (
            "invocation str32",
            h("92 90 81 a4 6a 73 6f 6e db 00 00 00 2e") + SEND_HI_JSON,
            SEND_HI_JSON,
        ),
        (
            "completion fixstr",
            h("92 ab 6d 65 73 73 61 67 65 70 61 63 6b aa") + ANSWER_MSGPACK,
            ANSWER_MSGPACK,
        ),
        ("completion str16", h("92 a4 6a 73 6f 6e da 00 2c") + ANSWER_JSON, ANSWER_JSON),
    ],
    ids=[
        "invocation fixstr",
        "invocation str16",
        "invocation str32",
        "completion fixstr",
        "completion str16",
    ],
)
def test_dotnet_accepts_old_spec_str_headers_for_bodies(
    kind: str, data: bytes, expected: bytes
) -> None:
    if kind.startswith("invocation"):
        assert list(read_invocation(data).payloads.values()) == [expected]
    else:
        assert read_completion(data)[1] == expected


@pytest.mark.parametrize(
    ("kind", "hex_bytes"),
    [
        ("ack", "91 ce 80 00 00 00"),
        ("ack", "91 cf 00 00 01 00 00 00 00 00"),
        ("ack", "91 d3 ff ff ff ff 7f ff ff ff"),
        ("group_command", "95 ce 80 00 00 00 a1 53 01 a1 47 a1 43"),
        ("group_command", "95 07 a1 53 cd 01 01 a1 47 a1 43"),
        ("group_command", "95 07 a1 53 ff a1 47 a1 43"),
    ],
)
def test_dotnet_rejects_integers_out_of_range(kind: str, hex_bytes: str) -> None:
    with pytest.raises(WireError):
        READERS[kind](h(hex_bytes))


@pytest.mark.parametrize(
    ("kind", "hex_bytes"),
    [
        ("invocation", "95 90 80 c0 c0 2a"),
        ("invocation", "95 90 80 a1 69 a1 72 90"),
        ("ack", "93 07 c1 c1"),
        ("ack", "91 07 00"),
        ("completion", "92 a4 6a 73 6f 6e c4 01 2a 00"),
    ],
)
def test_dotnet_ignores_bytes_it_never_reads(kind: str, hex_bytes: str) -> None:
    READERS[kind](h(hex_bytes))


def test_dotnet_tolerates_nil_excluded_id() -> None:
    decoded = read_invocation(h("92 92 c0 a2 63 31 81 a4 6a 73 6f 6e c4 01 2a"))
    assert decoded.payloads == {"json": b"\x2a"}
    assert "c1" in (decoded.excluded or [])


def test_dotnet_replaces_invalid_utf8_in_strings() -> None:
    command = read_group_command(h("95 07 a1 53 01 a2 47 ff a1 43"))
    assert command.group == "G\ufffd"
