"""A second, independent client: ``pysignalr`` (Python; negotiates version 0 and uses the
connectionId as ``id``). Connect, invoke with a result, an error, and a server push."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

pytestmark = pytest.mark.e2e

HUB = "/hubs/e2e"


@pytest.fixture(scope="module")
def server(module_hubplane_server):
    return module_hubplane_server(
        {HUB: "tests.e2e.hubs:E2EHub"},
        extra_args=["--authenticator", "tests.e2e.hubs:authenticate", "--log-level", "warning"],
    )


class Session:
    """A running pysignalr client with helpers that bound every wait."""

    def __init__(self, url: str, protocol: Any) -> None:
        self.client = SignalRClient(url, protocol=protocol, retry_count=1)
        self.opened = asyncio.Event()
        self.pushes: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
        self.errors: asyncio.Queue[CompletionMessage] = asyncio.Queue()

        async def on_open() -> None:
            self.opened.set()

        async def on_error(message: CompletionMessage) -> None:
            await self.errors.put(message)

        self.client.on_open(on_open)
        self.client.on_error(on_error)
        self.task: asyncio.Task[None] | None = None

    def on_push(self, method: str) -> None:
        async def handler(args: list[Any]) -> None:
            await self.pushes.put((method, args))

        self.client.on(method, handler)

    async def __aenter__(self) -> Session:
        self.task = asyncio.create_task(self.client.run())
        opened = asyncio.create_task(self.opened.wait())
        done, _ = await asyncio.wait({opened, self.task}, timeout=10, return_when="FIRST_COMPLETED")
        if opened not in done:
            opened.cancel()
            if self.task in done:
                self.task.result()  # raises the client's error
            raise TimeoutError("pysignalr did not connect within 10 s")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.task is not None
        self.task.cancel()
        try:
            await asyncio.wait_for(self.task, 5)
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - client shutdown noise
            pass

    async def invoke(self, method: str, *args: Any) -> CompletionMessage:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[CompletionMessage] = loop.create_future()

        async def on_completion(message: CompletionMessage) -> None:
            if not done.done():
                done.set_result(message)

        await self.client.send(method, list(args), on_invocation=on_completion)
        error_wait = asyncio.create_task(self.errors.get())
        finished, _ = await asyncio.wait(
            {done, error_wait}, timeout=5, return_when="FIRST_COMPLETED"
        )
        if error_wait in finished:
            return error_wait.result()
        error_wait.cancel()
        if done in finished:
            return done.result()
        raise TimeoutError(f"no Completion for {method} within 5 s")


PROTOCOLS = {"json": JSONProtocol, "messagepack": MessagepackProtocol}


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_pysignalr_invoke_error_and_push(server, protocol):
    url = server.hub_url(HUB) + "?user=pat"
    async with Session(url, PROTOCOLS[protocol]()) as s:
        s.on_push("Fired")
        s.on_push("Greeting")

        result = await s.invoke("Add", 20, 22)
        assert result.result == 42 and not getattr(result, "error", None)

        who = await s.invoke("Whoami")
        assert who.result == "pat"

        failed = await s.invoke("FailHub", "told you")
        assert failed.error == (
            "An unexpected error occurred invoking 'FailHub' on the server. HubException: told you"
        )

        await s.client.send("Fire", ["from-pysignalr"])  # no invocation id: a push comes back
        method, args = await asyncio.wait_for(s.pushes.get(), 5)
        assert (method, args) == ("Fired", ["from-pysignalr"])

        await s.invoke("PushCaller", "Greeting", {"hello": "world"})
        method, args = await asyncio.wait_for(s.pushes.get(), 5)
        assert (method, args) == ("Greeting", [{"hello": "world"}])

        ctx = await s.invoke("GetContext")
        assert ctx.result["protocol"] == protocol and ctx.result["transport"] == "WebSockets"
