"""A HubConnection driven in process: handshake, invocations, errors, streams, close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from backplane import Hub, HubException, User
from backplane.protocol import (
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    InvocationMessage,
    PingMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from tests.waiting import until

from .helpers import RS, Client, make_handler

events: list[Any] = []


class TestHub(Hub):
    async def on_connected(self) -> None:
        events.append(("connected", self.context.connection_id))
        await self.groups.add(self.context.connection_id, "everyone")

    async def on_disconnected(self, exception: Exception | None) -> None:
        events.append(("disconnected", self.context.connection_id, type(exception).__name__))

    async def add(self, a: int, b: int) -> int:
        return a + b

    def sync_add(self, a: int, b: int) -> int:
        return a + b

    async def void(self) -> None:
        events.append("void")

    async def nothing(self) -> str | None:
        return None

    async def fail(self) -> None:
        raise HubException("nope")

    async def crash(self) -> None:
        raise ValueError("secret detail")

    async def slow(self, tag: str, delay: float) -> str:
        await asyncio.sleep(delay)
        events.append(tag)
        return tag

    async def counter(self, n: int, delay: float = 0.0):  # type: ignore[no-untyped-def]
        try:
            for i in range(n):
                yield i
                await asyncio.sleep(delay)
        finally:
            events.append("stream-finally")

    def sync_counter(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    async def broken_stream(self):  # type: ignore[no-untyped-def]
        yield 1
        raise HubException("stream broke")

    async def who(self) -> str | None:
        return self.context.user_identifier

    async def items(self, key: str, value: Any) -> Any:
        previous = self.context.items.get(key)
        self.context.items[key] = value
        return previous

    async def to_group(self, text: str) -> None:
        await self.clients.group("everyone").send("Msg", text)

    async def to_others(self, text: str) -> None:
        await self.clients.others.send("Msg", text)

    async def kick(self) -> None:
        self.context.abort()


@pytest.fixture(autouse=True)
def _clear() -> None:
    events.clear()


@pytest.fixture(params=["json", "messagepack"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def connect(handler: Any, cid: str, protocol: str, **kw: Any) -> Client:
    client = Client(handler, cid, protocol, **kw)
    await client.handshake()
    return client


async def test_invoke_result_void_and_null(protocol: str) -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", protocol)
    await c.send(InvocationMessage("Add", [1, 2], "1"))
    await c.send(InvocationMessage("sync_add", [3, 4], "2"))
    await c.send(InvocationMessage("VOID", [], "3"))
    await c.send(InvocationMessage("nothing", [], "4"))
    got = await c.wait_messages(4)
    assert got == [
        CompletionMessage.with_result("1", 3),
        CompletionMessage.with_result("2", 7),
        CompletionMessage.empty("3"),
        CompletionMessage.with_result("4", None),
    ]


async def test_error_texts_follow_the_reference_server(protocol: str) -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", protocol)
    await c.send(InvocationMessage("Nope", [], "1"))
    await c.send(InvocationMessage("Add", [1], "2"))
    await c.send(InvocationMessage("Fail", [], "3"))
    await c.send(InvocationMessage("Crash", [], "4"))
    await c.send(InvocationMessage("Counter", [1], "5"))
    await c.send(StreamInvocationMessage("6", "Add", [1, 2]))
    got = await c.wait_messages(6)
    got.sort(key=lambda m: m.invocation_id)  # type: ignore[attr-defined]
    assert [m.error for m in got] == [  # type: ignore[attr-defined]
        "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.",
        "Failed to invoke 'Add' due to an error on the server.",
        "An unexpected error occurred invoking 'Fail' on the server. HubException: nope",
        "An unexpected error occurred invoking 'Crash' on the server.",
        "The client attempted to invoke the streaming 'Counter' method with a non-streaming invocation.",
        "The client attempted to invoke the non-streaming 'Add' method with a streaming invocation.",
    ]
    # Errors leave the connection open.
    await c.send(InvocationMessage("Add", [2, 2], "7"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("7", 4)]


async def test_detailed_errors_add_the_exception() -> None:
    handler = make_handler(TestHub, detailed_errors=True)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("Crash", [], "1"))
    await c.send(InvocationMessage("Add", [1], "2"))
    got = await c.wait_messages(2)
    assert got[0].error == (  # type: ignore[attr-defined]
        "An unexpected error occurred invoking 'Crash' on the server. ValueError: secret detail"
    )
    assert got[1].error == (  # type: ignore[attr-defined]
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: "
        "Invocation provides 1 argument(s) but target expects 2."
    )


async def test_non_blocking_invocations_get_no_reply(protocol: str) -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", protocol)
    for target, args in (("Nope", []), ("Add", [1]), ("Fail", []), ("Crash", []), ("Void", [])):
        await c.send(InvocationMessage(target, args))
    await c.send(InvocationMessage("Add", [1, 1], "last"))
    # Invocations run one at a time in arrival order: a reply to any of the five would come
    # before the answer to "last".
    assert await c.wait_messages(1) == [CompletionMessage.with_result("last", 2)]
    assert c.messages() == []
    assert events.count("void") == 1


async def test_invocations_from_one_client_run_in_order() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("Slow", ["a", 0.05], "1"))
    await c.send(InvocationMessage("Slow", ["b", 0.0], "2"))
    got = await c.wait_messages(2)
    assert [m.invocation_id for m in got] == ["1", "2"]  # type: ignore[attr-defined]
    assert [e for e in events if e in ("a", "b")] == ["a", "b"]


async def test_stream_items_completion_and_error(protocol: str) -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", protocol)
    await c.send(StreamInvocationMessage("s", "Counter", [3]))
    got = await c.wait_messages(4)
    assert got == [StreamItemMessage("s", i) for i in range(3)] + [CompletionMessage.empty("s")]
    await c.send(StreamInvocationMessage("u", "SyncCounter", [2]))
    got = await c.wait_messages(3)
    assert got == [
        StreamItemMessage("u", 0),
        StreamItemMessage("u", 1),
        CompletionMessage.empty("u"),
    ]
    await c.send(StreamInvocationMessage("t", "BrokenStream", []))
    got = await c.wait_messages(2)
    assert got == [
        StreamItemMessage("t", 1),
        CompletionMessage.with_error(
            "t",
            "An error occurred on the server while streaming results. HubException: stream broke",
        ),
    ]


async def test_stream_cancel_runs_finally_and_completes(protocol: str) -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", protocol)
    await c.send(StreamInvocationMessage("s", "Counter", [1000, 0.01]))
    first = await c.wait_messages(1)
    assert first == [StreamItemMessage("s", 0)]
    await c.send(CancelInvocationMessage("s"))
    deadline = asyncio.get_running_loop().time() + 2
    rest: list[Any] = []
    while CompletionMessage.empty("s") not in rest and asyncio.get_running_loop().time() < deadline:
        rest.extend(c.messages())
        await asyncio.sleep(0.01)
    assert rest[-1] == CompletionMessage.empty("s")
    assert all(isinstance(m, StreamItemMessage) for m in rest[:-1])
    assert "stream-finally" in events
    # A cancel for an unknown id is ignored.
    await c.send(CancelInvocationMessage("unknown"))
    await c.send(InvocationMessage("Add", [1, 2], "x"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("x", 3)]


async def test_stream_reusing_active_id_is_refused() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    await c.send(StreamInvocationMessage("s", "Counter", [1000, 0.01]))
    await c.send(StreamInvocationMessage("s", "Counter", [1]))
    got = await c.wait_messages(2)
    assert CompletionMessage.with_error("s", "Invocation ID 's' is already in use.") in got
    await c.conn.transport_closed()


async def test_disconnect_cancels_streams_and_runs_on_disconnected_once() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    await c.send(StreamInvocationMessage("s", "Counter", [1000, 0.01]))
    await c.wait_messages(1)
    await c.conn.transport_closed()
    await c.conn.transport_closed()
    # The stream's task is cancelled and ends on its own; on_disconnected was awaited above.
    await until(lambda: "stream-finally" in events, 2.0, "the stream's finally block")
    assert [e for e in events if isinstance(e, tuple) and e[0] == "disconnected"] == [
        ("disconnected", "c1", "NoneType")
    ]
    assert "c1" not in handler.connections
    assert handler.lifetime.connections == {}  # type: ignore[attr-defined]


async def test_fan_out_and_per_connection_items(protocol: str) -> None:
    handler = make_handler(TestHub)
    a = await connect(handler, "a", protocol)
    b = await connect(handler, "b", "json")
    await a.send(InvocationMessage("ToGroup", ["hi"]))
    await a.send(InvocationMessage("ToOthers", ["only b"]))
    await a.send(InvocationMessage("Items", ["k", 1], "1"))
    await a.send(InvocationMessage("Items", ["k", 2], "2"))
    got_a = await a.wait_messages(3)
    assert got_a == [
        InvocationMessage("Msg", ["hi"]),
        CompletionMessage.with_result("1", None),
        CompletionMessage.with_result("2", 1),
    ]
    got_b = await b.wait_messages(2)
    assert got_b == [InvocationMessage("Msg", ["hi"]), InvocationMessage("Msg", ["only b"])]


async def test_user_identifier() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json", user=User("alice", roles=["admin"]))
    await c.send(InvocationMessage("Who", [], "1"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("1", "alice")]


async def test_client_close_message_ends_connection() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    await c.send(CloseMessage())
    assert c.messages() == [CloseMessage()]
    assert c.conn.outbound.closed


async def test_abort_sends_close_without_reconnect() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("Kick", [], "1"))
    got = await c.wait_messages(1)
    assert got == [CloseMessage(None, False)]


@pytest.mark.parametrize(
    ("payload", "binary"),
    [
        (b"not json" + RS, False),
        (b'{"type":1}' + RS, False),
        (b'{"type":1,"target":5,"arguments":[]}' + RS, False),
        (b"\xff\xfe" + RS, False),
    ],
)
async def test_bad_frames_close_with_generic_error(payload: bytes, binary: bool) -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    other = await connect(handler, "c2", "json")
    await c.conn.receive(payload, binary)
    assert c.messages() == [CloseMessage("Connection closed with an error.", True)]
    assert c.conn.outbound.closed
    await other.send(InvocationMessage("Add", [1, 2], "1"))
    assert await other.wait_messages(1) == [CompletionMessage.with_result("1", 3)]


async def test_text_frame_on_messagepack_connection_closes() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "messagepack")
    await c.conn.receive(b'{"type":6}\x1e', False)
    assert c.messages() == [CloseMessage("Connection closed with an error.", True)]


async def test_oversized_message_closes() -> None:
    handler = make_handler(TestHub, max_message_size=100)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("Add", ["x" * 200, 1], "1"))
    assert c.messages() == [CloseMessage("Connection closed with an error.", True)]


@pytest.mark.parametrize(
    ("handshake", "error"),
    [
        (b'{"protocol":"xml","version":1}', "The protocol 'xml' is not supported."),
        (
            b'{"protocol":"json","version":3}',
            "The server does not support version 3 of the 'json' protocol.",
        ),
        (b'{"protocol":"json"', "An unexpected error occurred during connection handshake."),
        (b"[1,2]", "An unexpected error occurred during connection handshake."),
    ],
)
async def test_bad_handshakes_get_an_error_reply(handshake: bytes, error: str) -> None:
    handler = make_handler(TestHub)
    c = Client(handler, "c1")
    await c.conn.receive(handshake + RS, False)
    assert c.conn.outbound.take() == orjson.dumps({"error": error}) + RS
    assert c.conn.outbound.closed
    await c.conn.transport_closed()
    assert not any(e[0] == "connected" for e in events if isinstance(e, tuple))


async def test_messagepack_over_text_only_transport_is_refused() -> None:
    handler = make_handler(TestHub)
    c = Client(handler, "c1", supports_binary=False)
    await c.conn.receive(b'{"protocol":"messagepack","version":1}' + RS, False)
    assert (
        c.conn.outbound.take()
        == orjson.dumps(
            {
                "error": "Cannot use the 'messagepack' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            }
        )
        + RS
    )


async def test_handshake_split_over_frames_and_followed_by_messages() -> None:
    handler = make_handler(TestHub)
    c = Client(handler, "c1")
    await c.conn.receive(b'{"protocol":"js', False)
    assert c.conn.outbound.take() == b""
    await c.conn.receive(
        b'on","version":1}'
        + RS
        + b'{"type":1,"invocationId":"1","target":"add","arguments":[1,1]}'
        + RS,
        False,
    )
    data = b""
    for _ in range(100):
        data += c.conn.outbound.take()
        if data.count(RS) >= 2:
            break
        await asyncio.sleep(0.005)
    assert data == b"{}" + RS + b'{"type":3,"invocationId":"1","result":2}' + RS


async def test_timers_ping_timeout_and_handshake_timeout() -> None:
    handler = make_handler(
        TestHub, keepalive_interval=0.05, client_timeout=0.2, handshake_timeout=0.1
    )
    c = await connect(handler, "c1", "json")
    quiet = await connect(handler, "c3", "json")  # never pings: no client timeout, as in ASP.NET
    silent = Client(handler, "c2")
    loop = asyncio.get_running_loop()
    start = loop.time()
    handler.tick(start + 0.06)
    assert c.messages() == [PingMessage()]
    await c.send(PingMessage())
    handler.tick(start + 0.12)
    assert silent.conn.outbound.take() == orjson.dumps({"error": "Handshake was canceled."}) + RS
    handler.tick(start + 0.5)
    got = c.messages()
    assert got[-1] == CloseMessage("Connection closed with an error.", True)
    assert not quiet.conn.closing


async def test_on_connected_failure_closes_with_error() -> None:
    class Refuse(Hub):
        async def on_connected(self) -> None:
            raise HubException("go away")

        async def on_disconnected(self, exception: Exception | None) -> None:
            events.append("refuse-disconnected")

    handler = make_handler(Refuse)
    c = Client(handler, "c1")
    await c.conn.receive(b'{"protocol":"json","version":1}' + RS, False)
    data = c.conn.outbound.take()
    assert data == (
        b"{}"
        + RS
        + b'{"type":7,"error":"Connection closed with an error. HubException: go away"}'
        + RS
    )
    await c.conn.transport_closed()
    assert "refuse-disconnected" not in events
    assert handler.lifetime.connections == {}  # type: ignore[attr-defined]


async def test_slow_client_is_dropped_without_blocking_others() -> None:
    handler = make_handler(TestHub, max_buffer_size=2048)
    slow = await connect(handler, "slow", "json")
    fast = await connect(handler, "fast", "json")
    for _i in range(100):
        await fast.send(InvocationMessage("ToGroup", ["x" * 50]))
        assert len(await fast.wait_messages(1)) == 1  # the fast client keeps reading
    assert slow.conn.outbound.closed and slow.conn.closing
    assert handler.stats.slow_clients == 1
    assert not fast.conn.closing


class UploadHub(Hub):
    async def total(self, numbers: AsyncIterator[int]) -> int:
        result = 0
        async for n in numbers:
            result += n
        return result

    async def record(self, label: str, items: AsyncIterator[str]) -> None:
        collected = [item async for item in items]
        events.append((label, collected))

    async def double(self, items: AsyncIterator[int]):  # type: ignore[no-untyped-def]
        async for item in items:
            yield item * 2

    async def first_only(self, items: AsyncIterator[int]) -> int:
        async for item in items:
            return item
        return -1

    async def wait_forever(self, items: AsyncIterator[int]) -> None:
        try:
            async for item in items:
                events.append(("upload-got", item))
            events.append("upload-looked-complete")
        except ConnectionAbortedError:
            events.append("upload-aborted")
        finally:
            events.append("upload-finally")


async def test_upload_stream_with_invoke_send_and_stream(protocol: str) -> None:
    handler = make_handler(UploadHub)
    c = await connect(handler, "c1", protocol)
    await c.send(InvocationMessage("Total", [], "1", stream_ids=["s1"]))
    for n in (1, 2, 3):
        await c.send(StreamItemMessage("s1", n))
    await c.send(CompletionMessage.empty("s1"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("1", 6)]

    await c.send(InvocationMessage("Record", ["lbl"], None, stream_ids=["s2"]))
    await c.send(StreamItemMessage("s2", "a"))
    await c.send(StreamItemMessage("s2", "b"))
    await c.send(CompletionMessage.empty("s2"))
    # A method reading uploads runs in a task of its own, which ends after whatever it sends.
    await until(lambda: not c.conn.stream_tracker.readers, 2.0, "Record to return")
    assert ("lbl", ["a", "b"]) in events
    assert c.messages() == []  # send() gets no reply

    await c.send(StreamInvocationMessage("3", "Double", [], stream_ids=["s3"]))
    await c.send(StreamItemMessage("s3", 5))
    await c.send(StreamItemMessage("s3", 6))
    await c.send(CompletionMessage.empty("s3"))
    got = await c.wait_messages(3)
    assert got == [
        StreamItemMessage("3", 10),
        StreamItemMessage("3", 12),
        CompletionMessage.empty("3"),
    ]


async def test_upload_stream_errors_and_counts() -> None:
    handler = make_handler(UploadHub)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("Total", [], "1", stream_ids=["s1"]))
    await c.send(StreamItemMessage("s1", 1))
    await c.send(CompletionMessage.with_error("s1", "source broke"))
    assert await c.wait_messages(1) == [
        CompletionMessage.with_error(
            "1",
            "An unexpected error occurred invoking 'Total' on the server. HubException: source broke",
        )
    ]
    await c.send(InvocationMessage("Total", [], "2"))
    await c.send(InvocationMessage("Add", [1, 2], "3", stream_ids=["x"]))
    got = await c.wait_messages(2)
    assert {m.error for m in got} == {  # type: ignore[attr-defined]
        "An unexpected error occurred invoking 'Total' on the server. HubException: Client sent 0 stream(s), Hub method expects 1.",
        "Failed to invoke 'Add' due to an error on the server. HubException: Method does not exist.",
    }
    # The method returns early: later items for its stream are dropped, nothing breaks.
    await c.send(InvocationMessage("FirstOnly", [], "4", stream_ids=["s4"]))
    await c.send(StreamItemMessage("s4", 9))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("4", 9)]
    for n in range(30):
        await c.send(StreamItemMessage("s4", n))
    await c.send(CompletionMessage.empty("s4"))
    await c.send(InvocationMessage("Total", [], "5", stream_ids=["s5"]))
    await c.send(CompletionMessage.empty("s5"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("5", 0)]


async def test_abandoned_upload_leaks_no_task() -> None:
    handler = make_handler(UploadHub)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("WaitForever", [], "1", stream_ids=["s1"]))
    await c.send(StreamItemMessage("s1", 1))
    await until(lambda: ("upload-got", 1) in events, 2.0, "the method reading its upload")
    before = len(asyncio.all_tasks())
    await c.conn.transport_closed()
    # The reading method's task must end (no task left running for the abandoned upload).
    await until(lambda: not c.conn.stream_tracker.readers, 2.0, "the reading method to end")
    assert "upload-finally" in events and "upload-aborted" in events
    assert "upload-looked-complete" not in events
    assert len(asyncio.all_tasks()) < before
    assert not c.conn.stream_tracker.uploads


async def test_json_in_binary_frames_is_accepted_like_the_java_client_sends_it() -> None:
    handler = make_handler(TestHub)
    c = await connect(handler, "c1", "json")
    await c.conn.receive(
        b'{"type":1,"invocationId":"1","target":"Add","arguments":[2,3]}\x1e', True
    )
    assert await c.wait_messages(1) == [CompletionMessage.with_result("1", 5)]


class Unencodable(Hub):
    async def bad(self) -> object:
        return object()

    async def ok(self) -> int:
        return 1


async def test_a_result_that_cannot_be_encoded_closes_the_connection() -> None:
    handler = make_handler(Unencodable)
    c = await connect(handler, "c1", "json")
    await c.send(InvocationMessage("Bad", [], "1"))
    await c.send(InvocationMessage("Ok", [], "2"))
    got = await c.wait_messages(1)
    assert got == [CloseMessage("Connection closed with an error.", True)]
    assert c.conn.closing
