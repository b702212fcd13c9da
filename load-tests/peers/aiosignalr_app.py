"""The benchmark hub for aiosignalr, as an ASGI app on uvicorn (``aiosignalr_app:app``)."""

from aiosignalr.server import Hub, SignalRServer


class BenchHub(Hub):
    """Echo, broadcast and groups, as in hubplane_hub.BenchHub."""

    async def echo(self, payload: str) -> str:
        return payload

    async def broadcast(self, payload: str) -> None:
        await self.clients.all_.send("Msg", payload)

    # aiosignalr matches lower(target) with lower(method name): no snake_case mapping.
    async def JoinGroup(self, group: str) -> None:
        await self.groups.add(group)

    async def SendGroup(self, group: str, payload: str) -> None:
        await self.clients.group(group).send("Msg", payload)


app = SignalRServer(BenchHub).asgi_app(path="/hubs/bench")
