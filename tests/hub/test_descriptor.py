"""Method tables: name matching, collisions, argument counts, stream detection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backplane import Hub, HubRegistrationError, hub_method
from backplane.dispatch import HubDescriptor


class Sample(Hub):
    async def send_message(self, user: str, text: str) -> None: ...

    async def with_default(self, a: int, b: int = 2) -> int:
        return a + b

    def sync_add(self, a: int, b: int) -> int:
        return a + b

    async def many(self, *values: int) -> int:
        return sum(values)

    async def counter(self, n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    async def annotated_stream(self, n: int) -> AsyncIterator[int]:
        return self.counter(n)  # type: ignore[no-any-return]

    async def upload(self, items: AsyncIterator[int], label: str) -> None: ...

    @hub_method("Whoami")
    async def who(self) -> str | None:
        return None

    async def _private(self) -> None: ...

    @staticmethod
    def helper() -> None: ...


def test_names_match_case_insensitively_ignoring_underscores() -> None:
    d = HubDescriptor(Sample)
    for name in ("SendMessage", "sendMessage", "send_message", "SENDMESSAGE", "Send_Message"):
        method = d.lookup(name)
        assert method is not None and method.name == "send_message"
    assert d.lookup("whoami") is not None and d.lookup("who") is None
    assert d.lookup("_private") is None and d.lookup("private") is None
    assert d.lookup("helper") is None
    assert d.lookup("on_connected") is None and d.lookup("OnDisconnected") is None


def test_argument_counts_and_kinds() -> None:
    d = HubDescriptor(Sample)
    m = d.lookup("SendMessage")
    assert m is not None and (m.min_args, m.max_args, m.is_coroutine) == (2, 2, True)
    m = d.lookup("WithDefault")
    assert m is not None and (m.min_args, m.max_args) == (1, 2) and m.returns_value
    m = d.lookup("SyncAdd")
    assert m is not None and not m.is_coroutine
    m = d.lookup("Many")
    assert m is not None and (m.min_args, m.max_args) == (0, None)
    m = d.lookup("Counter")
    assert m is not None and m.is_stream
    m = d.lookup("AnnotatedStream")
    assert m is not None and m.is_stream
    m = d.lookup("Upload")
    assert m is not None and m.stream_params == [0] and (m.min_args, m.max_args) == (1, 1)
    m = d.lookup("SendMessage")
    assert m is not None and not m.returns_value and not m.is_stream


def test_colliding_names_are_refused_naming_both() -> None:
    class Bad(Hub):
        async def send_message(self) -> None: ...

        async def SendMessage(self) -> None: ...  # noqa: N802

    with pytest.raises(HubRegistrationError) as err:
        HubDescriptor(Bad)
    assert "send_message" in str(err.value) and "SendMessage" in str(err.value)


def test_explicit_name_collision_is_refused() -> None:
    class Bad(Hub):
        async def ping(self) -> None: ...

        @hub_method("Ping")
        async def other(self) -> None: ...

    with pytest.raises(HubRegistrationError):
        HubDescriptor(Bad)


def test_subclass_override_is_not_a_collision() -> None:
    class Base(Hub):
        async def greet(self) -> str:
            return "base"

    class Child(Base):
        async def greet(self) -> str:
            return "child"

    m = HubDescriptor(Child).lookup("Greet")
    assert m is not None and m.func is Child.greet


def test_non_hub_is_refused() -> None:
    with pytest.raises(HubRegistrationError):
        HubDescriptor(object)  # type: ignore[arg-type]
