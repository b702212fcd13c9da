"""Settings: one dataclass, read from CLI flags and ``HUBPLANE_*`` environment variables.

Flags win over variables, variables over defaults. Durations are in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backplane.redis.connect import CLUSTER_SCHEMES, cluster_seeds, is_cluster_url

from .errors import SettingsError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
# The transports in the order negotiate lists them (the client's order of preference).
TRANSPORTS = ("WebSockets", "ServerSentEvents", "LongPolling")
# The shortest REST access key accepted (HS256 wants a key of 32 bytes or more).
REST_KEY_MIN = 32
# Settings that hold secrets (a Redis URL may carry a password): never on a command line the
# server writes itself (a worker's), where any user of the host can read it.
SECRETS = ("admin_token", "jwt_secret", "token_secret", "rest_access_key", "redis_url")


@dataclass
class Settings:
    """Every setting of a hubplane server."""

    hubs: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "a hub to serve, PATH=module:Class (repeatable); HUBPLANE_HUBS takes "
            "'/a=mod:A,/b=mod:B'. Without any, a built-in demo hub is served at /hubs/demo"
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port to listen on"})
    keepalive_interval: float = field(
        default=15.0, metadata={"help": "seconds between server pings (WebSockets, SSE)"}
    )
    client_timeout: float = field(
        default=30.0,
        metadata={"help": "seconds without hearing from a client before it is disconnected"},
    )
    handshake_timeout: float = field(
        default=15.0, metadata={"help": "seconds a new connection has to complete its handshake"}
    )
    max_message_size: int = field(
        default=32768,
        metadata={
            "help": "largest incoming hub message in bytes (handshake included); 0 = no limit"
        },
    )
    max_buffer_size: int = field(
        default=1024 * 1024,
        metadata={"help": "bytes queued for one client before it is dropped as too slow"},
    )
    max_groups_per_connection: int = field(
        default=1000,
        metadata={
            "help": "groups one connection may be in; a join past it fails (the caller gets "
            "an error naming this setting, the connection stays)"
        },
    )
    max_streams_per_connection: int = field(
        default=100,
        metadata={
            "help": "server-to-client streams and client uploads one connection may have "
            "open together; one more fails its invocation"
        },
    )
    stream_buffer_capacity: int = field(
        default=10,
        metadata={
            "help": "items an upload stream buffers before the server stops reading the "
            "connection until the hub method takes some (as ASP.NET Core's StreamBufferCapacity)"
        },
    )
    detailed_errors: bool = field(
        default=False,
        metadata={"help": "send exception details to clients (development only)"},
    )
    log_level: str = field(default="info", metadata={"help": "one of " + ", ".join(LOG_LEVELS)})
    authenticator: str | None = field(
        default=None,
        metadata={"help": "module:function, async authenticate(request) -> User | str | None"},
    )
    disconnect_timeout: float = field(
        default=15.0,
        metadata={
            "help": "seconds a connection may stay without a transport: a negotiated one "
            "before its first request, a stateful one while its client comes back"
        },
    )
    max_pending_negotiations: int = field(
        default=10_000,
        metadata={
            "help": "negotiated connections this node holds before a transport starts them; "
            "past it negotiate answers 503 (each is held up to --disconnect-timeout)"
        },
    )
    ws_per_message_deflate: bool = field(
        default=False,
        metadata={"help": "enable WebSocket per-message compression (costs ~50 KB per connection)"},
    )
    protocols: tuple[str, ...] = field(
        default=("json", "messagepack"),
        metadata={"help": "hub protocols offered, comma separated"},
    )
    redis_url: str | None = field(
        default=None,
        metadata={"help": "Redis URL for the backplane (also read from REDIS_URL)"},
    )
    redis_pubsub: str | None = field(
        default=None,
        metadata={
            "help": "how hub channels travel on a Redis Cluster: sharded (SPUBLISH/SSUBSCRIBE, "
            "each channel on its shard; the default with a redis+cluster:// URL) or classic "
            "(PUBLISH/SUBSCRIBE, as .NET nodes sharing the cluster publish); one Redis: classic"
        },
    )
    channel_prefix: str = field(
        default="",
        metadata={
            "help": "bytes glued before every Redis channel and key (as .NET's ChannelPrefix)"
        },
    )
    admin_token: str | None = field(
        default=None,
        metadata={"help": "bearer token for the read-only /_hubplane/ admin API (off when unset)"},
    )
    presence_heartbeat: float = field(
        default=1.0, metadata={"help": "seconds between a node's presence heartbeats in Redis"}
    )
    presence_timeout: float = field(
        default=5.0,
        metadata={"help": "seconds without a heartbeat after which a node counts as dead"},
    )
    redis_payload_protocols: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "protocols serialized into each published message (default: all offered, "
            "as .NET nodes need); e.g. messagepack alone publishes faster"
        },
    )
    redis_buffer: int = field(
        default=10000,
        metadata={"help": "publishes kept while Redis is unreachable; older ones are dropped"},
    )
    redis_queue_limit: int = field(
        default=100_000,
        metadata={
            "help": "commands queued for Redis while it is reachable; beyond it the oldest "
            "publish is dropped and counted (a Redis slower than the node)"
        },
    )
    redis_reply_timeout: float = field(
        default=2.5,
        metadata={
            "help": "seconds Redis has to answer (a command batch, a connect, a PING) before "
            "its connection counts as failed: waiting queries fail, publishes are kept, the "
            "node reconnects"
        },
    )
    jwt_secret: str | None = field(
        default=None, metadata={"help": "verify JWT bearer tokens with this HS256 secret"}
    )
    jwt_public_key: str | None = field(
        default=None,
        metadata={"help": "verify JWT bearer tokens with this PEM public key file (RS256/ES256)"},
    )
    jwt_issuer: str | None = field(default=None, metadata={"help": "required JWT issuer (iss)"})
    jwt_audience: str | None = field(default=None, metadata={"help": "required JWT audience (aud)"})
    close_on_token_expiry: bool = field(
        default=False,
        metadata={"help": "close a connection (allowing reconnect) when its token expires"},
    )
    filters: tuple[str, ...] = field(
        default=(),
        metadata={"help": "a global hub filter, module:Class (repeatable; env: comma list)"},
    )
    token_secret: str | None = field(
        default=None,
        metadata={
            "help": "a secret shared by every node: signed connection tokens, so no sticky "
            "sessions are needed (requests of one connection may reach any node)"
        },
    )
    stateful_reconnect: bool = field(
        default=True,
        metadata={"help": "offer stateful reconnect to clients that ask (WebSockets)"},
    )
    durable_resume: bool = field(
        default=False,
        metadata={
            "help": "with Redis: record every message of a stateful connection in Redis before "
            "sending it, so that its client resumes on another node with nothing lost even "
            "after this node crashes (costs a Redis call per connection per burst and holds "
            "each delivery for a round trip; see docs/operations.md)"
        },
    )
    client_result_timeout: float = field(
        default=30.0, metadata={"help": "seconds invoke() waits for a client result by default"}
    )
    workers: int = field(default=1, metadata={"help": "worker processes (needs Redis when > 1)"})
    transports: tuple[str, ...] = field(
        default=TRANSPORTS,
        metadata={
            "help": "transports offered and accepted, comma separated: "
            "WebSockets, ServerSentEvents, LongPolling"
        },
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "browser origins allowed to call the hubs with credentials (CORS) and to "
            "open WebSockets, comma separated, e.g. https://app.example.com; none by default"
        },
    )

    drain_timeout: float = field(
        default=30.0,
        metadata={
            "help": "seconds a node has to drain on SIGTERM: readiness turns false, clients get "
            "a Close that lets them reconnect elsewhere, queues are flushed, the node leaves "
            "presence; it exits within this time"
        },
    )
    metrics: bool = field(default=True, metadata={"help": "serve Prometheus metrics at /metrics"})
    admin_port: int | None = field(
        default=None,
        metadata={
            "help": "serve /metrics, the admin API and the dashboard on a listener of their "
            "own on this port (0: any free port), and not on --port; unset: on --port"
        },
    )
    admin_host: str = field(
        default="127.0.0.1", metadata={"help": "address the --admin-port listener binds"}
    )
    dashboard: bool = field(
        default=False,
        metadata={
            "help": "serve the live cluster dashboard at /_hubplane/dashboard (needs "
            "--admin-token: the page asks for it and calls the admin API)"
        },
    )
    log_format: str = field(
        default="text",
        metadata={"help": "text, or json: one JSON object per line (for log shippers)"},
    )
    rest_access_key: str | None = field(
        default=None,
        metadata={
            "help": "serve the REST API of Azure SignalR Service under /api, for bearer tokens "
            "signed (HS256) with this key, at least 32 characters (off when unset)"
        },
    )
    forwarded_allow_ips: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "addresses or networks (comma separated, or *) of the reverse proxies "
            "whose X-Forwarded-Host, -Proto and -For are believed: by the WebSocket origin "
            "check, the REST API's audience check and uvicorn (client address, scheme; it "
            "then trusts these instead of its FORWARDED_ALLOW_IPS); none by default"
        },
    )
    rest_trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata={"help": "the former name of --forwarded-allow-ips; both lists count"},
    )

    def validate(self) -> Settings:
        """Check every value; raise SettingsError naming the first bad one."""
        for name in (
            "keepalive_interval",
            "client_timeout",
            "handshake_timeout",
            "disconnect_timeout",
            "client_result_timeout",
            "drain_timeout",
            "redis_reply_timeout",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{flag(name)} must be a positive number of seconds")
        if not 0 <= self.port <= 65535:
            raise SettingsError("--port must be between 0 and 65535")
        if self.admin_port is not None:
            if not 0 <= self.admin_port <= 65535:
                raise SettingsError("--admin-port must be between 0 and 65535")
            if self.admin_port == self.port and self.port != 0:
                raise SettingsError(
                    "--admin-port must differ from --port (leave it unset to serve the admin "
                    "API, /metrics and the dashboard on --port)"
                )
        if self.max_message_size < 0:
            raise SettingsError("--max-message-size must be 0 (no limit) or a number of bytes")
        if self.max_buffer_size < 1024:
            raise SettingsError("--max-buffer-size must be at least 1024 bytes")
        for name in (
            "max_groups_per_connection",
            "max_streams_per_connection",
            "stream_buffer_capacity",
            "max_pending_negotiations",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{flag(name)} must be at least 1")
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        self.log_level = self.log_level.lower()
        if any(p not in self.protocols for p in self.redis_payload_protocols):
            raise SettingsError("--redis-payload-protocols must be among --protocols")
        unknown = [p for p in self.protocols if p not in ("json", "messagepack")]
        if unknown or not self.protocols:
            raise SettingsError("--protocols takes json and/or messagepack")
        if self.presence_heartbeat <= 0 or self.presence_timeout <= self.presence_heartbeat:
            raise SettingsError(
                "--presence-timeout must be longer than --presence-heartbeat (both positive)"
            )
        if self.redis_buffer < 0:
            raise SettingsError("--redis-buffer must be 0 or more")
        if self.redis_queue_limit < 1:
            raise SettingsError("--redis-queue-limit must be at least 1")
        if self.redis_pubsub is not None and self.redis_pubsub not in ("sharded", "classic"):
            raise SettingsError("--redis-pubsub must be sharded or classic")
        cluster = bool(self.redis_url) and is_cluster_url(self.redis_url or "")
        if self.redis_pubsub == "sharded" and not cluster:
            raise SettingsError(
                "--redis-pubsub sharded needs a Redis Cluster: "
                "--redis-url redis+cluster://host:port[,host:port...]"
            )
        if cluster:
            try:
                cluster_seeds(self.redis_url or "")
            except ValueError as exc:
                raise SettingsError(f"--redis-url: {exc}") from None
        if self.redis_url and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://", "redis+sentinel://", *CLUSTER_SCHEMES)
        ):
            raise SettingsError(
                "--redis-url must start with redis://, rediss://, unix://, redis+sentinel://, "
                "redis+cluster:// or rediss+cluster://"
            )
        if self.durable_resume and not self.redis_url:
            raise SettingsError(
                "--durable-resume needs the Redis backplane: set --redis-url or REDIS_URL"
            )
        if self.jwt_secret and self.jwt_public_key:
            raise SettingsError("--jwt-secret and --jwt-public-key exclude each other")
        if (self.jwt_secret or self.jwt_public_key) and self.authenticator:
            raise SettingsError("--authenticator and the JWT options exclude each other")
        for spec in self.filters:
            if ":" not in spec:
                raise SettingsError(f"filter {spec!r} is not of the form module:Class")
        if self.workers < 1:
            raise SettingsError("--workers must be at least 1")
        if self.workers > 1 and not self.redis_url:
            raise SettingsError(
                "--workers > 1 needs the Redis backplane: set --redis-url or REDIS_URL, "
                "otherwise each worker would be a separate hub"
            )
        if self.dashboard and not self.admin_token:
            raise SettingsError("--dashboard needs --admin-token (the page calls the admin API)")
        if self.log_format.lower() not in LOG_FORMATS:
            raise SettingsError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        self.log_format = self.log_format.lower()
        self.transports = canonical_transports(self.transports)
        self.cors_origins = canonical_origins(self.cors_origins)
        if self.rest_access_key is not None and len(self.rest_access_key) < REST_KEY_MIN:
            raise SettingsError(
                f"--rest-access-key must be at least {REST_KEY_MIN} characters "
                "(an Azure SignalR access key has 44)"
            )
        self.rest_trusted_proxies = canonical_proxies(
            self.rest_trusted_proxies, "--rest-trusted-proxies"
        )
        self.forwarded_allow_ips = canonical_proxies(
            (*self.forwarded_allow_ips, *self.rest_trusted_proxies), "--forwarded-allow-ips"
        )
        for path, spec in self.hubs.items():
            if not path.startswith("/"):
                raise SettingsError(f"hub path {path!r} must start with '/'")
            if ":" not in spec:
                raise SettingsError(f"hub {path!r}: {spec!r} is not of the form module:Class")
        return self


def canonical_transports(names: Sequence[str]) -> tuple[str, ...]:
    """Transport names spelt as negotiate spells them, in negotiate's order; any case accepted."""
    by_lower = {t.lower(): t for t in TRANSPORTS}
    chosen = set()
    for name in names:
        canonical = by_lower.get(name.strip().lower())
        if canonical is None:
            raise SettingsError(
                f"--transports: unknown transport {name!r} (use {', '.join(TRANSPORTS)})"
            )
        chosen.add(canonical)
    if not chosen:
        raise SettingsError("--transports needs at least one transport")
    return tuple(t for t in TRANSPORTS if t in chosen)


def canonical_origins(origins: Sequence[str]) -> tuple[str, ...]:
    """Origins as browsers send them (``scheme://host[:port]``, lower case, no slash)."""
    result = []
    for raw in origins:
        origin = raw.strip().rstrip("/").lower()
        if not origin:
            continue
        scheme, sep, rest = origin.partition("://")
        if origin == "*" or not sep or not scheme or not rest or "/" in rest or "*" in rest:
            raise SettingsError(
                f"--cors-origins: {raw!r} is not an origin like https://app.example.com "
                "(wildcards are refused: the clients send credentials)"
            )
        result.append(origin)
    return tuple(dict.fromkeys(result))


def canonical_proxies(
    proxies: Sequence[str], option: str = "--forwarded-allow-ips"
) -> tuple[str, ...]:
    """Trusted proxy addresses as networks (``10.0.0.1`` -> ``10.0.0.1/32``), or ``*``."""
    result = []
    for raw in proxies:
        text = raw.strip()
        if not text:
            continue
        if text == "*":
            result.append(text)
            continue
        try:
            result.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise SettingsError(
                f"{option}: {raw!r} is not an address or a network like 10.0.0.0/8 (or *)"
            ) from None
    return tuple(dict.fromkeys(result))


def flag(name: str) -> str:
    """The CLI flag of a setting."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """The environment variable of a setting."""
    return "HUBPLANE_" + name.upper()


def parse_hub_spec(text: str) -> tuple[str, str]:
    """``/hubs/chat=pkg.mod:ChatHub`` -> ``("/hubs/chat", "pkg.mod:ChatHub")``."""
    path, sep, spec = text.partition("=")
    if not sep or not path or not spec:
        raise SettingsError(f"hub {text!r} is not of the form PATH=module:Class")
    path = path.strip()
    if len(path) > 1:
        path = path.rstrip("/")
    return path, spec.strip()


# Settings given as comma-separated lists.
LISTS = ("transports", "cors_origins", "filters", "rest_trusted_proxies", "forwarded_allow_ips")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if f.name == "hubs":
            return dict(parse_hub_spec(part) for part in raw.split(",") if part.strip())
        if f.name in ("protocols", "redis_payload_protocols"):
            return tuple(p.strip().lower() for p in raw.split(",") if p.strip())
        if f.name in LISTS:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if kind == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if kind in ("int", "int | None"):
            return int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{source}: {raw!r} is not a valid value for {f.name}") from None


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given by environment variables."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        name = env_name(f.name)
        if name in env:
            values[f.name] = _convert(f, env[name], name)
    if "redis_url" not in values and env.get("REDIS_URL"):
        values["redis_url"] = env["REDIS_URL"]
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; every default is None so that unset flags are visible."""
    for f in dataclasses.fields(Settings):
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = f" (env {env_name(f.name)}; default {default!r})" if f.name != "hubs" else ""
        kind = f.type if isinstance(f.type, str) else str(f.type)
        if f.name == "hubs":
            parser.add_argument(
                "--hub",
                dest="hubs",
                action="append",
                default=None,
                metavar="PATH=module:Class",
                help=help_text,
            )
        elif f.name == "filters":
            parser.add_argument(
                "--filter",
                dest="filters",
                action="append",
                default=None,
                metavar="module:Class",
                help=help_text,
            )
        elif kind == "bool":
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text + shown,
            )
        else:
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                default=None,
                metavar=f.name.upper(),
                help=help_text + shown,
            )


def build_settings(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, overridden by the environment, overridden by flags; validated."""
    values = from_environment(environ)
    if args is not None:
        fields = {f.name: f for f in dataclasses.fields(Settings)}
        for name, value in vars(args).items():
            if name not in fields or value is None:
                continue
            f = fields[name]
            if name == "hubs":
                values["hubs"] = dict(parse_hub_spec(v) for v in value)
            elif name == "filters":
                values["filters"] = tuple(value)
            elif isinstance(value, str):
                values[name] = _convert(f, value, flag(name))
            else:
                values[name] = value
    return Settings(**values).validate()


def settings_from_cli(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``argv`` (without the program name) as the flags of ``hubplane serve``."""
    parser = argparse.ArgumentParser(prog="hubplane serve")
    add_arguments(parser)
    return build_settings(parser.parse_args(list(argv)), environ)
