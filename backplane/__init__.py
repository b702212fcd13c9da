"""hubplane's library: hub protocols, the hub programming model and the lifetime managers."""

from .authorization import authorize
from .clients import ClientProxy, GroupManager, HubCallerClients, HubClients, HubContext
from .connection import HubConnection
from .emitter import Emitter, SyncEmitter
from .errors import (
    ClientDisconnectedError,
    ClientNotFoundError,
    ClientResultError,
    ClientResultFailedError,
    ClientResultTimeoutError,
    ConnectionNotFoundError,
    HubException,
    HubplaneError,
    HubRegistrationError,
    LimitExceededError,
    ProtocolError,
)
from .filters import HubFilter, HubInvocationContext, HubLifetimeContext
from .handler import HubConnectionHandler, HubOptions
from .hub import Hub, HubCallerContext, User, hub_method
from .lifetime.base import HubLifetimeManager, SerializedMessage
from .lifetime.memory import MemoryLifetimeManager
from .presence import Presence
from .redis.bus import BackplaneUnavailable
from .redis.manager import RedisLifetimeManager

__all__ = [
    "authorize",
    "ClientDisconnectedError",
    "ClientNotFoundError",
    "ClientResultError",
    "ClientResultFailedError",
    "ClientResultTimeoutError",
    "BackplaneUnavailable",
    "ConnectionNotFoundError",
    "Emitter",
    "Presence",
    "RedisLifetimeManager",
    "SyncEmitter",
    "ClientProxy",
    "GroupManager",
    "Hub",
    "HubCallerClients",
    "HubCallerContext",
    "HubClients",
    "HubConnection",
    "HubConnectionHandler",
    "HubContext",
    "HubException",
    "HubFilter",
    "HubInvocationContext",
    "HubLifetimeContext",
    "HubLifetimeManager",
    "HubOptions",
    "HubRegistrationError",
    "HubplaneError",
    "LimitExceededError",
    "MemoryLifetimeManager",
    "ProtocolError",
    "SerializedMessage",
    "User",
    "hub_method",
]
