"""A typed hub used by the tests (and checked by mypy in test_typed_hubs)."""

from __future__ import annotations

from typing import Protocol

from backplane import Hub, hub_method


class ChatClient(Protocol):
    async def receive_message(self, user: str, text: str) -> None: ...

    async def get_count(self) -> int: ...

    @hub_method("legacy_name")
    async def renamed(self, value: int) -> None: ...


class ChatHub(Hub[ChatClient]):
    async def send_message(self, user: str, text: str) -> None:
        await self.clients.all.receive_message(user, text)

    async def others(self, text: str) -> None:
        await self.clients.others.receive_message("server", text)

    async def ask_caller(self) -> int:
        return await self.clients.caller.get_count()

    async def rename(self, value: int) -> None:
        await self.clients.caller.renamed(value)

    async def misspelt_at_runtime(self) -> None:
        proxy = self.clients.caller
        await proxy.recieve_message("x", "y")  # type: ignore[attr-defined]
