"""The ceiling of the stack: a bare uvicorn ASGI WebSocket app with no protocol at all.

One app, five paths:

- ``/echo``: every text frame goes back to its sender.
- ``/broadcast``: every text frame goes to every connection, one awaited ASGI send per receiver.
- ``/groups``: the first frame ``J:<name>`` joins a group (answered ``ok``); every later frame
  goes to the members of that group, one awaited ASGI send each.
- ``/direct?c=<name>``: the connection is known as ``<name>``; a frame ``<target> <text>`` sends
  ``<text>`` to the connection known as ``<target>``.
- ``/users?u=<user>``: the connection belongs to ``<user>``; a frame ``<user> <text>`` sends
  ``<text>`` to every connection of that user.
"""

from typing import Any
from urllib.parse import parse_qs

_everyone: set[Any] = set()
_groups: dict[str, set[Any]] = {}
_named: dict[str, Any] = {}
_users: dict[str, set[Any]] = {}


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


async def _direct(send: Any, receive: Any, name: str) -> None:
    _named[name] = send
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            target, _, text = (message.get("text") or "").partition(" ")
            peer = _named.get(target)
            if peer is not None:
                try:
                    await peer({"type": "websocket.send", "text": text})
                except Exception:
                    pass
    finally:
        if _named.get(name) is send:
            del _named[name]


async def _user(send: Any, receive: Any, user: str) -> None:
    mine = _users.setdefault(user, set())
    mine.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            target, _, text = (message.get("text") or "").partition(" ")
            members = _users.get(target)
            if members:
                await _fan_out(members, text)
    finally:
        mine.discard(send)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Serve /echo, /broadcast, /groups, /direct and /users."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    path = scope["path"]
    if path in ("/direct", "/users"):
        query = parse_qs(scope.get("query_string", b"").decode())
        if path == "/direct":
            await _direct(send, receive, query.get("c", [""])[0])
        else:
            await _user(send, receive, query.get("u", [""])[0])
        return
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
