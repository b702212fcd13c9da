"""The built-in demo hub served when no ``--hub`` is given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import HTMLResponse

from backplane import Hub, HubException


class DemoHub(Hub):
    """A small chat hub: broadcast, echo, groups and a counter stream."""

    async def on_connected(self) -> None:
        await self.clients.others.send("Joined", self.context.connection_id)

    async def send_message(self, user: str, text: str) -> None:
        """Broadcast a chat line to everyone."""
        await self.clients.all.send("ReceiveMessage", user, text)

    async def echo(self, value: object) -> object:
        """Return the argument."""
        return value

    async def join(self, room: str) -> None:
        """Join a room (a group)."""
        await self.groups.add(self.context.connection_id, room)

    async def send_to_room(self, room: str, text: str) -> None:
        """Send a line to a room."""
        await self.clients.group(room).send("ReceiveMessage", room, text)

    async def counter(self, count: int, delay: float = 0.1) -> AsyncIterator[int]:
        """Stream the numbers 0 .. count-1."""
        if count > 10_000:
            raise HubException("count must be at most 10000")
        for i in range(count):
            yield i
            await asyncio.sleep(delay)


DEMO_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hubplane demo</title>
<style>body{font:15px system-ui,sans-serif;max-width:40em;margin:2em auto}
#log{border:1px solid #ccc;height:20em;overflow:auto;padding:.5em;white-space:pre-wrap}
input{width:70%}</style></head>
<body><h1>hubplane demo hub</h1>
<p>This page speaks the SignalR JSON hub protocol over a WebSocket to <code>/hubs/demo</code>.
Open it in two tabs. Official clients (<code>@microsoft/signalr</code>) connect the same way.</p>
<div id="log"></div>
<form id="f"><input id="text" placeholder="say something" autocomplete="off">
<button>Send</button></form>
<script>
const RS = "\\x1e";
const log = (t) => {
  const l = document.getElementById("log");
  l.textContent += t + "\\n";
  l.scrollTop = 1e9;
};
const url = location.origin.replace(/^http/, "ws") + "/hubs/demo";
const ws = new WebSocket(url);
const me = "guest-" + Math.floor(Math.random() * 1000);
ws.onopen = () => ws.send(JSON.stringify({ protocol: "json", version: 1 }) + RS);
ws.onclose = () => log("(disconnected)");
ws.onmessage = (e) => {
  for (const part of e.data.split(RS)) {
    if (!part) continue;
    const m = JSON.parse(part);
    if (m.type === undefined) { log("(connected as " + me + ")"); continue; }
    if (m.type === 6) { ws.send(JSON.stringify({ type: 6 }) + RS); continue; }
    if (m.type === 1 && m.target === "ReceiveMessage") log(m.arguments[0] + ": " + m.arguments[1]);
    if (m.type === 1 && m.target === "Joined") log("(someone joined: " + m.arguments[0] + ")");
    if (m.type === 7) log("(closed by the server" + (m.error ? ": " + m.error : "") + ")");
  }
};
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  ws.send(JSON.stringify({ type: 1, target: "SendMessage", arguments: [me, input.value] }) + RS);
  input.value = "";
};
</script></body></html>
"""


async def demo_page(request: Request) -> HTMLResponse:
    """A page that chats through the demo hub."""
    return HTMLResponse(DEMO_PAGE)
