"""A hub's options and counters, shared by its handler, connections and dispatcher."""

from __future__ import annotations

from dataclasses import dataclass, field

from .stats import INVOCATION_BUCKETS, Buckets, Observer

#: The outcomes invocations are counted by.
OUTCOMES = ("ok", "error", "unknown_method", "bad_arguments", "unauthorized")
#: The outcomes stateful reconnects are counted by.
RESUMES = ("same_node", "other_node", "after_crash", "refused")
#: The limits whose refusals are counted: streams and negotiations here, groups in the
#: lifetime manager's registry.
LIMITS = ("groups", "streams", "negotiations")


@dataclass(slots=True)
class HubOptions:
    """Protocol-level limits and timers (seconds and bytes)."""

    keepalive_interval: float = 15.0
    client_timeout: float = 30.0
    handshake_timeout: float = 15.0
    max_message_size: int | None = 32768
    detailed_errors: bool = False
    max_buffer_size: int = 1024 * 1024
    protocols: tuple[str, ...] = ("json", "messagepack")
    client_result_timeout: float | None = 30.0
    close_on_token_expiry: bool = False
    #: Groups one connection may be in on its node (a join past it fails: LimitExceededError).
    max_groups_per_connection: int = 1000
    #: Server-to-client streams and upload streams one connection may have open together.
    max_streams_per_connection: int = 100
    #: Items an upload stream buffers before the connection stops reading (ASP.NET Core's
    #: StreamBufferCapacity).
    stream_buffer_capacity: int = 10


@dataclass(slots=True)
class HubStats:
    """Counters for metrics (plain integers: the per-message paths add to them)."""

    slow_clients: int = 0
    #: Writes to a client's socket that raised; the socket was dropped (see the transports).
    send_failures: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    #: Completed handshakes and ended connections by (transport, protocol).
    connects: dict[tuple[str, str], int] = field(default_factory=dict)
    disconnects: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Invocations by outcome: ok, error, unknown_method, bad_arguments, unauthorized.
    invocations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    #: Stateful reconnects: resumed on this node (``same_node``), taken over from another
    #: node (``other_node``), taken up from its record after its node died (``after_crash``,
    #: ``--durable-resume``), or refused here (the connection was not to be had).
    resumes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESUMES, 0))
    #: Connections handed over to another node, and messages sent again after a resume.
    handovers: int = 0
    replayed: int = 0
    #: Messages a connection taken up after its node died got from its channels' history
    #: (published while no node delivered to it).
    revived_messages: int = 0
    #: Streams refused by ``max_streams_per_connection``, negotiations by the server's bound.
    refusals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMITS, 0))
    #: How long non-streaming hub methods ran, in seconds.
    invocation_seconds: Observer = field(default_factory=lambda: Buckets(INVOCATION_BUCKETS))
