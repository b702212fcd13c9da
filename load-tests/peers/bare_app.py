"""The ceiling of the stack: a bare uvicorn ASGI WebSocket app with no protocol at all.

One app, three paths:

- ``/echo``: every text frame goes back to its sender.
- ``/broadcast``: every text frame goes to every connection, one awaited ASGI send per receiver.
- ``/groups``: the first frame ``J:<name>`` joins a group (answered ``ok``); every later frame
  goes to the members of that group, one awaited ASGI send each.
"""

from typing import Any

_everyone: set[Any] = set()
_groups: dict[str, set[Any]] = {}


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _fan_out(members: set[Any], text: str) -> None:
    frame = {"type": "websocket.send", "text": text}
    for peer in list(members):
        try:
            await peer(frame)
        except Exception:  # a receiver that went away must not stop the others
            pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Serve /echo, /broadcast and /groups."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    path = scope["path"]
    members: set[Any] = _everyone if path == "/broadcast" else set()
    if path == "/broadcast":
        _everyone.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text") or ""
            if path == "/echo":
                await send({"type": "websocket.send", "text": text})
            elif path == "/broadcast":
                await _fan_out(members, text)
            elif text.startswith("J:") and members is not _everyone and not members:
                members = _groups.setdefault(text[2:], set())
                members.add(send)
                await send({"type": "websocket.send", "text": "ok"})
            else:
                await _fan_out(members, text)
    finally:
        members.discard(send)
