"""The hubs one app serves: settings mapped to hub options, the Redis node, one endpoint a path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from backplane import Hub, HubConnectionHandler, HubOptions
from backplane.filters import FilterSpec
from backplane.hub import hub_wire_name
from backplane.redis.node import RedisNode

from .httputil import normalize_path
from .settings import Settings


class HubEndpoint:
    """One hub served at one path."""

    def __init__(self, path: str, handler: HubConnectionHandler) -> None:
        self.path = path
        self.handler = handler


def hub_options(settings: Settings) -> HubOptions:
    """The options every hub of the app runs with."""
    return HubOptions(
        keepalive_interval=settings.keepalive_interval,
        client_timeout=settings.client_timeout,
        handshake_timeout=settings.handshake_timeout,
        max_message_size=settings.max_message_size or None,
        detailed_errors=settings.detailed_errors,
        max_buffer_size=settings.max_buffer_size,
        protocols=tuple(settings.protocols),
        client_result_timeout=settings.client_result_timeout,
        close_on_token_expiry=settings.close_on_token_expiry,
        max_groups_per_connection=settings.max_groups_per_connection,
        max_streams_per_connection=settings.max_streams_per_connection,
        stream_buffer_capacity=settings.stream_buffer_capacity,
    )


def redis_node(settings: Settings) -> RedisNode | None:
    """This node's Redis backplane with ``--redis-url``, else None (one node, in memory)."""
    if not settings.redis_url:
        return None
    node = RedisNode(
        settings.redis_url,
        channel_prefix=settings.channel_prefix,
        heartbeat=settings.presence_heartbeat,
        timeout=settings.presence_timeout,
        buffer_limit=settings.redis_buffer,
        payload_protocols=settings.redis_payload_protocols,
        pubsub=settings.redis_pubsub,
    )
    node.bus.reply_timeout = settings.redis_reply_timeout
    node.bus.queue_limit = settings.redis_queue_limit
    return node


def build_endpoints(
    hubs: Mapping[str, type[Hub[Any]]],
    options: HubOptions,
    node: RedisNode | None,
    filters: Sequence[FilterSpec],
) -> dict[str, HubEndpoint]:
    """One endpoint per hub path (normalized); two hubs at one path are an error."""
    endpoints: dict[str, HubEndpoint] = {}
    for raw_path, hub_type in hubs.items():
        path = normalize_path(raw_path)
        if path in endpoints:
            raise ValueError(f"two hubs at {path!r}")
        lifetime = None
        if node is not None:
            lifetime = node.manager(hub_wire_name(hub_type), options.protocols)
        handler = HubConnectionHandler(hub_type, options, lifetime, filters)
        endpoints[path] = HubEndpoint(path, handler)
    return endpoints
