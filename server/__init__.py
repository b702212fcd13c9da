"""hubplane's deployable service: the Starlette app, transports, settings and CLI."""

from .app import Hubplane, create_app
from .settings import Settings

__all__ = ["Hubplane", "Settings", "create_app"]
