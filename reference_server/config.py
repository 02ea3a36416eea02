"""Server configuration: every limit and timing in one typed place.

A TOML file (``rtbench serve --config FILE``) is decoded with msgspec straight into
these structs, so a misspelt or mistyped field is one clear line naming the file
and the field instead of a setting silently ignored. CLI flags override the file.
Defaults are documented in docs/SERVER.md; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta, Struct

from rtbench.tomlfile import load_toml_struct

Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]


class ConfigError(Exception):
    """A configuration file or value that cannot be used; one line for the user."""


class ListenConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8765
    transport: Literal["picows", "websockets"] = "picows"
    # picows allocates this per connection up front and grows it on demand: small
    # keeps idle connections cheap (reports/transport-choice.md has the figures).
    read_buffer_bytes: Annotated[int, Meta(ge=256)] = 2048
    backlog: Positive = 4096  # listen(2) backlog, so reconnect storms are not refused


class LimitsConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    max_frame_bytes: Annotated[int, Meta(ge=256)] = 65536  # larger frames: close 1009
    max_body_chars: Positive = 4096  # message body; longer: error body_too_long
    max_rooms: Positive = 100  # rooms one connection may be subscribed to
    max_history: Positive = 200  # largest history page; bigger limits are clamped
    max_backlog_frames: Positive = 1024  # frames queued behind a slow (async) request
    send_buffer_bytes: Annotated[int, Meta(ge=1024)] = 262144  # outgoing buffer limit
    slow_consumer_grace_ms: NonNegative = 2000  # over the limit this long: close 1013
    slow_consumer_hard_bytes: Annotated[int, Meta(ge=1024)] = 4194304  # over this: 1013 now
    close_linger_ms: NonNegative = 3000  # a peer that has not answered our close is cut after
    max_pending_writes: Positive = 100000  # store writes queued before sends are refused
    # security limits (reference_server/limits.py): 0 switches a limit off
    max_connections_per_user: NonNegative = 32  # connections that said hello as one user: 4429
    max_connections_per_ip: NonNegative = 1000  # open sockets per source address: 4429
    connection_limit_exempt: list[str] = msgspec.field(  # addresses the per-IP limit skips
        default_factory=lambda: ["127.0.0.0/8", "::1"]
    )
    rate_per_s: NonNegative = 200  # frames a connection may send per second (token bucket)
    rate_burst: Positive = 1000  # ... and at once
    rate_abuse_frames: Positive = 1000  # frames dropped in one over-limit episode: close 1008
    # admission (limits.Admission): accepted upgrades per second for the whole process,
    # past it HTTP 503 + Retry-After; 0 switches it off. admit_burst 0: one second's worth
    admit_rate: Annotated[float, Meta(ge=0)] = 0.0  # may be fractional: 0.5 = one per 2 s
    admit_burst: NonNegative = 0

    def __post_init__(self) -> None:
        from reference_server.limits import parse_networks

        parse_networks(self.connection_limit_exempt)  # a bad entry fails the config load


class TimingConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    hello_timeout_ms: Positive = 10000  # no hello by then: close 4408
    heartbeat_interval_ms: Positive = 2000  # silent this long: the server pings
    heartbeat_timeout_ms: Positive = 3000  # still silent this long after: close 1011
    typing_timeout_ms: Positive = 5000  # a typing start expires by itself after this
    presence_grace_ms: NonNegative = 3000  # offline is announced only after this long away
    drain_timeout_ms: Positive = 3000  # longest a SIGTERM drain waits for the store
    sweep_ms: Annotated[int, Meta(ge=10)] = 250  # how often the sweeper walks connections
    idle_timeout_ms: NonNegative = 0  # no data frame from the client this long: close 4408


class ReplayConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    ring_size: NonNegative = 1000  # recent stored items kept in memory per room
    max_replay: NonNegative = 10000  # longest gap a resume replays; past it recovered=false
    presence_max_room: NonNegative = 200  # bigger rooms get no presence/receipt fan-out


class SecurityConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Identity and HTTP-side checks (reference_server/auth.py, auth_http.py)."""

    jwt_public_key: str = ""  # PEM file: verify RS256 JWTs (rtbench serve --jwt-public-key)
    allowed_origins: list[str] = []  # upgrade Origin allow-list; empty: any (HTTP 403 otherwise)
    metrics_token: str = ""  # /metrics needs Authorization: Bearer this (RTBENCH_METRICS_TOKEN)
    admin_token: str = ""  # /admin/drain needs Authorization: Bearer this (RTBENCH_ADMIN_TOKEN)


class StoreConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite:///rtbench-server.db"
    # WAL + NORMAL survives a process crash (kill -9) but not a power cut; FULL
    # fsyncs each group commit. reports/store-durability.md has the cost of each.
    synchronous: Literal["normal", "full"] = "full"
    max_batch: Positive = 2048  # operations in one group commit at most


class ClusterConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Several workers and machines (docs/SCALING.md): rtbench serve --workers / --broker."""

    workers: Positive = 1  # worker processes on this machine, one port (SO_REUSEPORT)
    broker: str = ""  # redis://host:port/db: cross-worker fan-out and presence; "" = none
    prefix: str = "rtbench"  # Redis key and channel prefix: one per cluster sharing a Redis
    lease_ms: Annotated[int, Meta(ge=1000)] = 10000  # a silent worker's users go offline after
    gap_repair_ms: Annotated[int, Meta(ge=10)] = 200  # an item missing this long: read the store


class ServerConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    listen: ListenConfig = msgspec.field(default_factory=ListenConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    timing: TimingConfig = msgspec.field(default_factory=TimingConfig)
    replay: ReplayConfig = msgspec.field(default_factory=ReplayConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    insecure_dev: bool = False  # accept unsigned identities (never in production)
    jwt_secret: str | None = None  # HS256 secret; RTBENCH_JWT_SECRET also sets it


def redact_url(url: str) -> str:
    """A store or broker URL without its password: for logs, /healthz, the listening line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def load_config(path: str | Path | None) -> ServerConfig:
    """Read a TOML config file (or the defaults), failing with one line on any error."""
    if path is None:
        return ServerConfig()
    return load_toml_struct(path, ServerConfig, "config file", ConfigError)


def override(config: ServerConfig, section: str, **values: object) -> ServerConfig:
    """Return ``config`` with non-None ``values`` set in ``section`` (CLI flags win)."""
    changes = {k: v for k, v in values.items() if v is not None}
    if not changes:
        return config
    part = msgspec.structs.replace(getattr(config, section), **changes)
    return msgspec.structs.replace(config, **{section: part})
