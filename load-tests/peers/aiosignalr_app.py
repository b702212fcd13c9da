"""The benchmark hub for aiosignalr, as an ASGI app on uvicorn (``aiosignalr_app:app``)."""

from aiosignalr.server import Hub, SignalRServer


class BenchHub(Hub):
    """Echo, broadcast, groups, sends to a connection or a user, as in hubplane_hub.BenchHub."""

    async def on_connected(self) -> None:
        # aiosignalr has no authentication hook: its user id is a context field the app sets.
        # The benchmark's users come as ``?user=<id>``, as for hubplane's authenticator.
        self.context.user_id = self.context.query_string.get("user") or None

    async def echo(self, payload: str) -> str:
        return payload

    async def broadcast(self, payload: str) -> None:
        await self.clients.all_.send("Msg", payload)

    # aiosignalr matches lower(target) with lower(method name): no snake_case mapping.
    async def JoinGroup(self, group: str) -> None:
        await self.groups.add(group)

    async def SendGroup(self, group: str, payload: str) -> None:
        await self.clients.group(group).send("Msg", payload)

    async def SendConnection(self, connection_id: str, payload: str) -> None:
        await self.clients.client(connection_id).send("Msg", payload)

    async def SendUser(self, user: str, payload: str) -> None:
        await self.clients.user(user).send("Msg", payload)


app = SignalRServer(BenchHub).asgi_app(path="/hubs/bench")
