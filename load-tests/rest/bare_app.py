"""The HTTP ceiling for ``rest_rate.py``: a bare ASGI app on the same uvicorn stack as
``hubplane serve`` (uvloop, httptools) that reads the body and answers 202, nothing else.

    python load-tests/rest/bare_app.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every request 202 with an empty body."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
