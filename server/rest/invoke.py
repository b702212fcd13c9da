"""``POST .../connections/{id}/:invoke`` (2024-12-01): a client result over REST.

The body is ``{"target", "arguments"}``; the answer is 200 with the client's result as the
JSON body, 400 ``{"error": ...}`` when the client's handler failed, 404 for a connection no
node has (or that left before answering), 504 when it does not answer in time
(``--client-result-timeout``).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from backplane.errors import (
    ClientDisconnectedError,
    ClientResultFailedError,
    ClientResultTimeoutError,
    ConnectionNotFoundError,
)

from .body import JSON_TYPES, json_call
from .call import Call
from .errors import RestError
from .request import Reply


def _jsonable(value: Any) -> Any:
    # A MessagePack client may answer with binary: JSON carries it as base64.
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def invoke(call: Call) -> Reply:
    """Ask one client for a result and answer with it."""
    if call.request.content_type not in JSON_TYPES:
        raise RestError(415, 'an :invoke body is JSON: {"target": ..., "arguments": [...]}')
    target, arguments = json_call(call.request.body)
    cid = call.params["connection"]
    lifetime = call.lifetime
    try:
        result = await lifetime.invoke_connection(
            cid, target, arguments, lifetime.client_result_timeout
        )
    except ClientResultFailedError as exc:
        return Reply(400, orjson.dumps({"error": str(exc)}), "application/json")
    except ClientDisconnectedError:
        raise RestError(404, f"connection {cid!r} left before it answered") from None
    except ClientResultTimeoutError as exc:
        raise RestError(504, str(exc)) from None
    except ConnectionNotFoundError:
        raise RestError(404, f"connection {cid!r} does not exist") from None
    return Reply(200, orjson.dumps(result, default=_jsonable), "application/json")
