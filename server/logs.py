"""Logging set-up: every record names the node, and secrets never reach a log."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from datetime import UTC, datetime
from typing import Any

# Secret query values: bearer tokens and the connection token used as ``id``.
_SECRET_QUERY = re.compile(r"((?:[?&]|\b)(?:access_token|id)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)

NODE_ID = f"{socket.gethostname()}-{os.getpid()}"


def scrub(text: str) -> str:
    """``text`` with access tokens, connection tokens and bearer tokens masked."""
    if "=" in text or "earer" in text:
        text = _SECRET_QUERY.sub(r"\1***", text)
        text = _BEARER.sub(r"\1***", text)
    return text


class ScrubFilter(logging.Filter):
    """Masks secrets in a record's final message and adds ``record.node``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = NODE_ID
        # Scrub the template and each argument in place, so formatters that unpack
        # ``record.args`` (uvicorn's access formatter does) keep working.
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: scrub(v) if isinstance(v, str) else v for k, v in args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters print ``exc_text`` when it is set: the traceback, masked.
            record.exc_text = scrub(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER = logging.Formatter()
# The loggers whose records may carry a token: uvicorn's (the access log has query strings)
# and every one of hubplane's (``hubplane.*``).
_GUARDED = ("uvicorn", "uvicorn.error", "uvicorn.access", "hubplane")


def protect() -> None:
    """Mask secrets in the records of hubplane's and uvicorn's loggers, whatever the handlers.

    A filter on a logger sees the records made by that logger, before any handler, so this
    holds for apps made with ``create_app`` and served under any logging configuration (the
    CLI also guards the handlers, see :func:`guard_handlers`). Loggers named later are
    covered when it runs again (``create_app`` and the app's startup both call it).
    """
    names = set(_GUARDED)
    names.update(n for n in logging.root.manager.loggerDict if n.startswith("hubplane."))
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(ScrubFilter())


FORMAT = "%(asctime)s %(levelname)s [%(node)s] %(name)s: %(message)s"

# How the connection's records name it (``HubConnection.log_name``), at a message's start.
_CONNECTION = re.compile(r"^hub (?P<hub>[\w.]+) connection (?P<connection_id>[^\s:]+)")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (``--log-format json``).

    Keys: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, ``node``, and ``hub``,
    ``connection_id`` and ``exception`` where they apply: given as ``extra=`` or, as every
    connection's records do, named at the message's start (``hub ChatHub connection abc: ...``).
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            "node": getattr(record, "node", NODE_ID),
        }
        hub = getattr(record, "hub", None)
        connection_id = getattr(record, "connection_id", None)
        if hub is None and connection_id is None and message.startswith("hub "):
            found = _CONNECTION.match(message)
            if found is not None:
                hub, connection_id = found["hub"], found["connection_id"]
        if hub is not None:
            entry["hub"] = str(hub)
        if connection_id is not None:
            entry["connection_id"] = str(connection_id)
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = scrub(record.exc_text)
        if record.stack_info:
            entry["stack"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def install(level: str, log_format: str = "text") -> None:
    """Configure the root logger and guard every handler the process has with the filter."""
    numeric = logging.DEBUG if level == "trace" else getattr(logging, level.upper(), logging.INFO)
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=numeric, handlers=[handler])
    else:
        logging.basicConfig(level=numeric, format=FORMAT)
    guard_handlers()


def guard_handlers() -> None:
    """Add the filter to the handlers of the root logger and of uvicorn's loggers."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access"]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, ScrubFilter) for f in handler.filters):
                handler.addFilter(ScrubFilter())
