"""Logging set-up: every record names the node, and secrets never reach a log."""

from __future__ import annotations

import logging
import os
import re
import socket

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
        return True


FORMAT = "%(asctime)s %(levelname)s [%(node)s] %(name)s: %(message)s"


def install(level: str) -> None:
    """Configure the root logger and guard every handler the process has with the filter."""
    numeric = logging.DEBUG if level == "trace" else getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format=FORMAT)
    guard_handlers()


def guard_handlers() -> None:
    """Add the filter to the handlers of the root logger and of uvicorn's loggers."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access"]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, ScrubFilter) for f in handler.filters):
                handler.addFilter(ScrubFilter())
