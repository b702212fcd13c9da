"""The ceiling of the stack: bare uvicorn ASGI WebSocket apps (echo, and broadcast to all)."""

from typing import Any

_connections: set[Any] = set()


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Send every text frame back."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": message["text"]})


async def broadcast(scope: Any, receive: Any, send: Any) -> None:
    """Send every text frame to every connection, one awaited ASGI send per receiver."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    _connections.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            for peer in list(_connections):
                try:
                    await peer({"type": "websocket.send", "text": message["text"]})
                except Exception:
                    pass
    finally:
        _connections.discard(send)
