"""``GET .../groups/{group}/connections?maxpagesize=&continuationToken=`` (2024-12-01).

Members in connection-id order; the token names the last id of the page (base64url), so a
page stays correct when members come and go between two calls (none is listed twice).
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from urllib.parse import urlencode

import orjson

from .call import Call
from .errors import RestError
from .request import Reply

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _page_size(call: Call) -> int:
    raw = call.request.query("maxpagesize")
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise RestError(400, f"maxpagesize must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def encode_token(last: str) -> str:
    """The continuation token after the connection id ``last``."""
    return base64.urlsafe_b64encode(last.encode()).rstrip(b"=").decode()


def decode_token(token: str) -> str:
    """The connection id a continuation token names (400 for a token not made here)."""
    padded = token + "=" * (-len(token) % 4)
    try:
        last = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        last = ""
    if not last:
        raise RestError(400, "continuationToken is not one this API returned")
    return last


async def group_connections(call: Call) -> Reply:
    """One page of a group's connections: ``{"value": [...], "nextLink": ...}``."""
    size = _page_size(call)
    token = call.request.query("continuationToken")
    members = sorted(await call.presence.group_members(call.params["group"]))
    start = bisect_right(members, decode_token(token)) if token else 0
    page = members[start : start + size]
    users = await call.presence.users_of(page)
    next_link = None
    if start + size < len(members):
        query = urlencode(
            {
                "api-version": call.version or "",
                "maxpagesize": size,
                "continuationToken": encode_token(page[-1]),
            }
        )
        next_link = call.request.raw_path.decode("latin-1") + "?" + query
    body = {
        "value": [{"connectionId": c, "userId": u} for c, u in zip(page, users, strict=True)],
        "nextLink": next_link,
    }
    return Reply(200, orjson.dumps(body), "application/json")
