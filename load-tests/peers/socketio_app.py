"""The benchmark app for python-socketio on uvicorn (``socketio_app:app``).

With ``REDIS_URL`` set the server uses ``AsyncRedisManager`` (the way python-socketio runs on
several nodes); without it, the default in-memory manager.
"""

import os

import socketio

_redis = os.environ.get("REDIS_URL")
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(_redis) if _redis else None,
    cors_allowed_origins=[],
)


@sio.event
async def echo(sid: str, payload: str) -> str:
    return payload  # the ack carries it back


@sio.event
async def broadcast(sid: str, payload: str) -> None:
    await sio.emit("msg", payload)


@sio.event
async def join(sid: str, group: str) -> str:
    await sio.enter_room(sid, group)
    return "ok"


@sio.event
async def group(sid: str, name: str, payload: str) -> None:
    await sio.emit("msg", payload, room=name)


@sio.event
async def connection(sid: str, target: str, payload: str) -> None:
    # A socket's id is also a room of its own: ``to=sid`` reaches it on whatever node it is.
    await sio.emit("msg", payload, to=target)


# No send-to-user: python-socketio has no notion of users (an app would keep a room per user,
# which is the groups scenario again).

app = socketio.ASGIApp(sio)
