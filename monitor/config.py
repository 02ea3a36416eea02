"""Monitor configuration: which services to probe, how often, and where to keep score.

One TOML file (``rtbench monitor --config FILE``) or the command's flags build a
``MonitorConfig``; flags override the file. Every field has a default that works
against the reference server on loopback, so ``rtbench monitor --target URL`` alone
is a complete configuration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from msgspec import Meta, Struct

from loadtest.adapters import AdapterError, adapter_class
from rtbench.slo import SLO, SLOFileError, load_slo
from rtbench.tomlfile import load_toml_struct

DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_DB = "rtbench-monitor.db"
DEFAULT_ROOM = "rtbench-monitor"
UPTIME_WINDOWS: tuple[str, ...] = ("1h", "24h", "7d", "30d")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ConfigError(ValueError):
    """The monitor configuration is invalid; the message is one line a person can act on."""


def parse_duration(value: str | float | int, what: str) -> float:
    """'500ms', '5s', '2m', '1h', '30d' or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration such as 5s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(value)
        if not match:
            raise ConfigError(f"{what}: {value!r} is not a duration (use 500ms, 5s, 2m, 1h or 30d)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{what}: must be more than zero, got {value!r}")
    return seconds


Duration = str | float


class TargetConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """One monitored service."""

    url: str
    name: str = ""  # defaults to host:port of the URL
    protocol: str = "reference"  # a loadtest adapter by name (docs/ADAPTERS.md) or FILE.py
    protocol_options: dict[str, Any] = {}  # the adapter's options (docs/ADAPTERS.md)
    room: str = DEFAULT_ROOM  # the probe room (reference protocol)
    health_url: str | None = None  # default: http(s)://host:port/healthz for the reference protocol
    metrics_url: str | None = None  # Prometheus text of the target, read for its connection count
    connections_metric: str | None = None  # metric name (summed over series) = open connections
    metrics_token: str | None = None  # bearer token the target's /metrics wants (--metrics-token)
    held_connection: bool = True  # keep one connection open and time its recovery on every drop
    sender_token: str | None = None  # tokens for hello; default: the probe user ids (insecure-dev)
    receiver_token: str | None = None
    held_token: str | None = None
    jwt_secret: str | None = None  # mint HS256 tokens for the probe users instead
    headers: dict[str, str] = {}  # extra handshake headers (e.g. Authorization for a gateway)

    def resolved_name(self) -> str:
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return parts.netloc or self.url


class MonitorConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole monitor. Durations accept '5s', '500ms', '1h' or seconds as a number."""

    target: list[TargetConfig] = []
    interval: Duration = 5.0
    timeout: Duration | None = None  # per probe; default: the interval, at most 10 s
    listen: str = DEFAULT_LISTEN
    metrics_token: str | None = None  # our /metrics then needs Authorization: Bearer TOKEN
    db: str = DEFAULT_DB
    slo: str | None = None  # path of the SLO file (rtbench.slo); default targets otherwise
    failures_to_open: Annotated[int, Meta(ge=1, le=1000)] = 2  # consecutive failures -> incident
    health_window: Duration = "1h"  # window of the delivery-latency and recovery verdicts
    retention: Duration = "35d"  # probe history kept on disk (at least the SLO window)


class Settings(Struct, kw_only=True):
    """The validated configuration with every duration in seconds and the SLO loaded."""

    targets: list[TargetConfig]
    interval: float
    timeout: float
    listen_host: str
    listen_port: int
    metrics_token: str | None
    db: Path
    slo: SLO
    failures_to_open: int
    health_window: float
    retention: float


def load_config_file(path: str | Path) -> MonitorConfig:
    """Read a monitor TOML file; raises ConfigError naming the file and the problem."""
    return load_toml_struct(path, MonitorConfig, "monitor config", ConfigError)


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464' or ':9464' (loopback) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def parse_target_arg(text: str, protocol: str) -> TargetConfig:
    """``--target URL`` or ``--target NAME=URL``."""
    name, sep, url = text.partition("=")
    if not sep or "://" in name:
        name, url = "", text
    return TargetConfig(url=url, name=name, protocol=protocol)


def default_health_url(target: TargetConfig) -> str | None:
    """The reference server answers /healthz on its WebSocket port; other servers must say."""
    if target.health_url is not None:
        return target.health_url or None  # "" switches the health check off
    if target.protocol != "reference":
        return None
    parts = urlsplit(target.url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, "http")
    return urlunsplit((scheme, parts.netloc, "/healthz", "", ""))


REFERENCE_CONNECTIONS_METRIC = "rtbench_server_connections"


def default_metrics(target: TargetConfig) -> tuple[str, str] | None:
    """(metrics URL, connections metric) to read; the reference server's by default."""
    if target.metrics_url is not None:
        if not target.metrics_url:
            return None  # "" switches the metrics reading off
        metric = target.connections_metric or (
            REFERENCE_CONNECTIONS_METRIC if target.protocol == "reference" else None
        )
        return (target.metrics_url, metric) if metric else None
    if target.protocol != "reference":
        return None
    parts = urlsplit(target.url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, "http")
    url = urlunsplit((scheme, parts.netloc, "/metrics", "", ""))
    return url, target.connections_metric or REFERENCE_CONNECTIONS_METRIC


def settle(config: MonitorConfig) -> Settings:
    """Validate a MonitorConfig into Settings (every error one line)."""
    if not config.target:
        raise ConfigError(
            "no target: pass --target ws://HOST:PORT/ws or list [[target]] in --config"
        )
    names: set[str] = set()
    for target in config.target:
        try:
            problem = adapter_class(target.protocol).target_problem(target.url)
        except AdapterError as exc:
            raise ConfigError(str(exc)) from None
        if problem is not None:
            raise ConfigError(problem)
        name = target.resolved_name()
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"target name {name!r}: use 1-64 characters of letters, digits, _ . : -"
            )
        if name in names:
            raise ConfigError(f"target name {name!r} is used twice; give each target a name")
        names.add(name)
        if target.metrics_url and not default_metrics(target):
            raise ConfigError(
                f"target {name}: metrics_url needs connections_metric (a metric name)"
            )
    interval = parse_duration(config.interval, "interval")
    if interval < 0.1:
        raise ConfigError("interval: at least 100ms")
    timeout = (
        parse_duration(config.timeout, "timeout")
        if config.timeout is not None
        else min(interval, 10.0)
    )
    if timeout > interval:
        raise ConfigError(
            f"timeout ({timeout:g}s) must not exceed the interval ({interval:g}s): "
            "a probe must end before the next one starts"
        )
    try:
        slo = load_slo(config.slo)
    except SLOFileError as exc:
        raise ConfigError(str(exc)) from None
    retention = parse_duration(config.retention, "retention")
    if retention < slo.uptime.window_seconds:
        raise ConfigError(
            f"retention ({config.retention}) is shorter than the SLO window ({slo.uptime.window})"
        )
    host, port = parse_listen(config.listen)
    return Settings(
        targets=list(config.target),
        interval=interval,
        timeout=timeout,
        listen_host=host,
        listen_port=port,
        metrics_token=config.metrics_token or None,
        db=Path(config.db),
        slo=slo,
        failures_to_open=config.failures_to_open,
        health_window=parse_duration(config.health_window, "health_window"),
        retention=retention,
    )
