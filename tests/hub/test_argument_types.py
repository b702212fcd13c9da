"""Arguments are checked against the hub method's annotations (checked, never converted)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Optional, Union

import pytest

from backplane import Hub
from backplane.dispatch import HubDescriptor
from backplane.protocol import (
    CompletionMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

from .helpers import Client, make_handler

BINDING = "Failed to invoke '{}' due to an error on the server."
DETAIL = (
    " InvalidDataException: Error binding arguments. Make sure that the types of the provided "
    "values match the types of the hub method being invoked."
)


class Typed(Hub):
    async def text(self, value: str) -> Any:
        return value

    async def whole(self, value: int) -> Any:
        return value

    async def real(self, value: float) -> Any:
        return value

    async def flag(self, value: bool) -> Any:
        return value

    async def blob(self, value: bytes) -> Any:
        return len(value)

    async def items(self, value: list[int]) -> Any:
        return value

    async def table(self, value: dict[str, int]) -> Any:
        return value

    async def maybe(self, value: int | None) -> Any:
        return value

    async def old_maybe(self, value: Optional[str]) -> Any:  # noqa: UP045 - the old spelling
        return value

    async def either(self, value: Union[int, str]) -> Any:  # noqa: UP007 - the old spelling
        return value

    async def annotated(self, value: Annotated[str, "a note"]) -> Any:
        return value

    async def default_none(self, value: str = None) -> Any:  # type: ignore[assignment]
        return value

    async def anything(self, value: Any) -> Any:
        return value

    async def bare(self, value):  # type: ignore[no-untyped-def]
        return value

    async def custom(self, value: Client) -> Any:  # a class of its own: not checked
        return value

    async def optional_tail(self, a: str, b: int = 0) -> Any:
        return [a, b]

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def upload(self, label: str, items: AsyncIterator[int]) -> Any:
        return [label, [i async for i in items]]


CASES: list[tuple[str, list[Any], list[Any]]] = [
    # method, accepted values, refused values
    ("text", ["", "x"], [1, 1.5, True, None, [], {}, b"x"]),
    ("whole", [0, -3, 2**40], [True, False, 1.5, "1", None, []]),
    ("real", [1.5, 2, 0], [True, "1.5", None]),
    ("flag", [True, False], [0, 1, "true", None]),
    ("items", [[], [1, "not checked"]], [{}, "abc", None, 1]),
    ("table", [{}, {"a": "not checked"}], [[], "x", None]),
    ("maybe", [None, 3], [True, "3", 1.5]),
    ("old_maybe", [None, "x"], [1]),
    ("either", [1, "x"], [None, 1.5, True]),
    ("annotated", ["x"], [1]),
    ("default_none", ["x", None], [1]),
    ("anything", [None, 1, "x", [], {}], []),
    ("bare", [None, 1, "x", [], {}], []),
    ("custom", [None, 1, "x"], []),
]


@pytest.mark.parametrize(("method", "good", "bad"), CASES)
def test_annotations_accept_and_refuse(method: str, good: list[Any], bad: list[Any]) -> None:
    from backplane.binding import arguments_fit

    hub_method = HubDescriptor(Typed).lookup(method)
    assert hub_method is not None
    for value in good:
        assert arguments_fit(hub_method.checks, [value]), (method, value)
    for value in bad:
        assert not arguments_fit(hub_method.checks, [value]), (method, value)


def test_unchecked_methods_have_no_checks() -> None:
    descriptor = HubDescriptor(Typed)
    for name in ("anything", "bare", "custom", "count"):
        method = descriptor.lookup(name)
        assert method is not None
        assert method.checks == () or name == "count"


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_a_mismatch_is_a_binding_error_and_the_connection_stays(protocol: str) -> None:
    handler = make_handler(Typed)
    c = Client(handler, "c1", protocol)
    await c.handshake()
    await c.send(InvocationMessage("Text", [{"a": 1}], "1"))
    await c.send(InvocationMessage("Whole", [True], "2"))
    await c.send(InvocationMessage("OptionalTail", ["x", "y"], "3"))
    await c.send(InvocationMessage("OptionalTail", ["x"], "4"))  # the default is not checked
    await c.send(InvocationMessage("Real", [2], "5"))  # an int for a float: passed on as it is
    await c.send(StreamInvocationMessage("6", "Count", ["3"]))
    got = await c.wait_messages(6)
    got.sort(key=lambda m: m.invocation_id)  # type: ignore[attr-defined]
    assert got == [
        CompletionMessage.with_error("1", BINDING.format("Text")),
        CompletionMessage.with_error("2", BINDING.format("Whole")),
        CompletionMessage.with_error("3", BINDING.format("OptionalTail")),
        CompletionMessage.with_result("4", ["x", 0]),
        CompletionMessage.with_result("5", 2),
        CompletionMessage.with_error("6", BINDING.format("Count")),
    ]
    assert type(got[4].result) is int  # type: ignore[attr-defined]
    assert handler.stats.invocations["bad_arguments"] == 4
    assert not c.conn.closing
    await c.send(InvocationMessage("Text", ["still here"], "7"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("7", "still here")]


async def test_detailed_errors_name_the_binding_failure() -> None:
    handler = make_handler(Typed, detailed_errors=True)
    c = Client(handler, "c1", "json")
    await c.handshake()
    await c.send(InvocationMessage("Flag", [1], "1"))
    assert await c.wait_messages(1) == [
        CompletionMessage.with_error("1", BINDING.format("Flag") + DETAIL)
    ]


async def test_upload_arguments_are_checked_and_the_stream_is_not_counted() -> None:
    handler = make_handler(Typed)
    c = Client(handler, "c1", "messagepack")
    await c.handshake()
    await c.send(InvocationMessage("Upload", [7], "1", stream_ids=["s1"]))
    assert await c.wait_messages(1) == [CompletionMessage.with_error("1", BINDING.format("Upload"))]
    await c.send(InvocationMessage("Upload", ["ok"], "2", stream_ids=["s2"]))
    await c.send(StreamItemMessage("s2", 5))
    await c.send(CompletionMessage.empty("s2"))
    assert await c.wait_messages(1) == [CompletionMessage.with_result("2", ["ok", [5]])]
