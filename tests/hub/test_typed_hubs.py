"""Typed hubs: client methods by protocol, PascalCase on the wire, checked by mypy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from backplane import Hub
from backplane.clients import client_interface, hub_client_type, pascal_case
from backplane.protocol import CompletionMessage, InvocationMessage

from .helpers import Client, make_handler
from .typed_hub_sample import ChatClient, ChatHub

REPO = Path(__file__).resolve().parents[2]


def test_names_on_the_wire() -> None:
    assert pascal_case("receive_message") == "ReceiveMessage"
    assert pascal_case("receiveMessage") == "ReceiveMessage"
    assert pascal_case("ReceiveMessage") == "ReceiveMessage"
    assert hub_client_type(ChatHub) is ChatClient
    interface = client_interface(ChatClient)
    assert interface is not None
    assert {k: (v.wire_name, v.returns_value) for k, v in interface.items()} == {
        "receive_message": ("ReceiveMessage", False),
        "get_count": ("GetCount", True),
        "renamed": ("legacy_name", False),
    }

    class Untyped(Hub):
        pass

    assert hub_client_type(Untyped) is None


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_typed_proxies_send_pascal_case_names(protocol: str) -> None:
    handler = make_handler(ChatHub)
    a, b = Client(handler, "a", protocol), Client(handler, "b", protocol)
    await a.handshake()
    await b.handshake()
    await a.send(InvocationMessage("SendMessage", ["ann", "hi"], invocation_id="1"))
    got = await a.wait_messages(2)
    assert [(m.target, m.arguments) for m in got if isinstance(m, InvocationMessage)] == [
        ("ReceiveMessage", ["ann", "hi"])
    ]
    assert [(m.target, m.arguments) for m in await b.wait_messages(1)] == [
        ("ReceiveMessage", ["ann", "hi"])
    ]
    await b.send(InvocationMessage("Others", ["yo"]))
    assert [(m.target, m.arguments) for m in await a.wait_messages(1)] == [
        ("ReceiveMessage", ["server", "yo"])
    ]
    # From outside the hub too.
    await handler.context.clients.client("b").receive_message("ctx", "x")
    assert [m.target for m in await b.wait_messages(1)] == ["ReceiveMessage"]


async def test_a_method_with_a_result_is_a_client_result() -> None:
    handler = make_handler(ChatHub)
    client = Client(handler, "c")
    await client.handshake()
    await client.send(InvocationMessage("AskCaller", [], invocation_id="1"))
    (ask,) = await client.wait_messages(1)
    assert isinstance(ask, InvocationMessage) and ask.target == "GetCount"
    assert ask.invocation_id
    await client.send(CompletionMessage.with_result(ask.invocation_id, 7))
    (reply,) = await client.wait_messages(1)
    assert isinstance(reply, CompletionMessage) and reply.result == 7
    await client.send(InvocationMessage("Rename", [3], invocation_id="2"))
    got = await client.wait_messages(2)
    assert [m.target for m in got if isinstance(m, InvocationMessage)] == ["legacy_name"]


async def test_a_misspelt_method_fails_the_call_and_untyped_proxies_have_none() -> None:
    handler = make_handler(ChatHub)
    client = Client(handler, "c")
    await client.handshake()
    await client.send(InvocationMessage("MisspeltAtRuntime", [], invocation_id="1"))
    (reply,) = await client.wait_messages(1)
    assert isinstance(reply, CompletionMessage) and reply.error

    class Untyped(Hub):
        pass

    untyped = make_handler(Untyped)
    with pytest.raises(AttributeError, match="send"):
        untyped.context.clients.all.receive_message  # noqa: B018
    await asyncio.sleep(0)


def test_mypy_reports_a_misspelt_client_method(tmp_path: Path) -> None:
    sample = tmp_path / "misspelt_hub.py"
    sample.write_text(
        textwrap.dedent(
            """
            from typing import Protocol

            from backplane import Hub


            class ChatClient(Protocol):
                async def receive_message(self, user: str, text: str) -> None: ...


            class ChatHub(Hub[ChatClient]):
                async def send_message(self, user: str, text: str) -> None:
                    await self.clients.all.recieve_message(user, text)

                async def fine(self, user: str, text: str) -> None:
                    await self.clients.group("g").receive_message(user, text)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(sample)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    output: Any = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert '"ChatClient" has no attribute "recieve_message"' in output, output
    assert output.count("error:") == 1, output


def test_unresolvable_annotations_still_tell_void_from_results() -> None:
    namespace: dict[str, Any] = {}
    exec(
        textwrap.dedent(
            """
            from __future__ import annotations
            from typing import TYPE_CHECKING, Protocol
            if TYPE_CHECKING:
                from decimal import Decimal

            class PriceClient(Protocol):
                async def price(self, value: Decimal) -> None: ...
                async def quote(self) -> Decimal: ...
            """
        ),
        namespace,
    )
    interface = client_interface(namespace["PriceClient"])
    assert interface is not None
    assert not interface["price"].returns_value
    assert interface["quote"].returns_value
