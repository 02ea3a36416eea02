"""The scenario model: one msgspec struct for connect, chat, fanout, rtt and soak runs.

Engine-neutral on purpose: the native engine (`rtbench run`) and the Locust users build
their load from the same resolved ``Scenario`` and the same ``loadtest.plan.Plan``. A
scenario comes from a built-in name plus CLI flags, or from a TOML file (documented
examples sit beside this module; docs/LOADTEST.md lists every field).
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from loadtest.client.policy import ReconnectPolicy
from loadtest.scenarios.knobs import Command, Knob, Option, options_of
from rtbench.tomlfile import load_toml_struct

EXAMPLES_DIR = Path(__file__).parent

Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
Share = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=1)]

NO_CHECK: tuple[Command, ...] = ("run", "locust")
"""Knobs ``rtbench check`` does not offer: it holds ``--connections`` of its own and chats
on them (no fanout publishers, soak windows, connect heartbeats or closed loop)."""

FD_PER_PROCESS = 19_000
"""Sockets one worker process may hold: the machine's hard limit is 20,000 open files."""


class Kind(StrEnum):
    CONNECT = "connect"  # ramp to N connections, hold them, check each answers a heartbeat
    CHAT = "chat"  # users in rooms + DM pairs, Poisson sends, typing and receipts mixed in
    FANOUT = "fanout"  # publishers broadcasting events into rooms of subscribers
    RTT = "rtt"  # request/response round trips (any echo server)
    SOAK = "soak"  # chat at a steady rate for a long time, with per-minute windows


class ScenarioError(ValueError):
    """A scenario file or flag combination that cannot run; one line says what to fix."""


class Scenario(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A load scenario. ``None`` fields take the kind's default (see :data:`DEFAULTS`).

    A field with a :class:`Knob` is also a flag of the commands it names, with that help
    text (``loadtest.scenarios.knobs``); the others are set in a scenario file.
    """

    scenario: Kind
    name: str | None = None  # free text for reports
    target: Annotated[
        str | None,
        Knob("ws:// or wss:// URL (http(s):// for --protocol socketio and sse).", short="-t"),
    ] = None
    protocol: Annotated[
        str,
        Knob(
            "A built-in adapter (the default reference; the list: docs/ADAPTERS.md, or an "
            "unknown name's error) or path/to/adapter.py[:Class].",
            short="-p",
        ),
    ] = "reference"
    protocol_options: dict[str, Any] = {}  # the adapter's options (socketio, generic: ADAPTERS.md)
    users: Annotated[
        Count | None, Knob("Connections (fanout: subscribers).", short="-u", commands=NO_CHECK)
    ] = None
    room_size: Annotated[
        Annotated[int, Meta(ge=2)] | None,
        Knob("Members per room (fanout: subscribers per room)."),
    ] = None
    publishers: Annotated[
        Count | None, Knob("fanout: publishing connections per room.", commands=NO_CHECK)
    ] = None
    rate: Annotated[
        NonNegative | None, Knob("Messages per second per sending connection (Poisson).")
    ] = None
    dm_share: Annotated[Share | None, Knob("chat: share of sends that are direct messages.")] = None
    typing_share: Annotated[
        Share | None, Knob("chat: share of sends preceded by a typing indicator.")
    ] = None
    receipt_share: Annotated[
        Share | None, Knob("chat: share of sends followed by a read receipt.")
    ] = None
    ramp: Annotated[
        NonNegative | None,
        Knob(
            "Seconds to open every connection (0: as fast as allowed; Locust's spawn rate follows)."
        ),
    ] = None
    duration: Annotated[
        Positive | None, Knob("Seconds of load (connect: of holding).", short="-d")
    ] = None
    drain: Annotated[
        NonNegative,
        Knob("Seconds to wait for in-flight deliveries after the last send (default 5)."),
    ] = 5.0
    window: Annotated[
        Positive | None, Knob("soak: seconds per reported window.", commands=NO_CHECK)
    ] = None
    heartbeat: Annotated[
        Positive,
        Knob("connect: seconds between heartbeat probes of every connection.", commands=NO_CHECK),
    ] = 10.0
    closed_loop: Annotated[
        bool,
        Knob(
            "rtt: send the next request when the reply arrives (measures the ceiling; no "
            "--rate). A request the server drops unanswered ends that connection's loop and "
            "counts as lost: raise or switch off the server's rate limit first (the reference "
            "server drops frames past limits.rate_per_s, 200/s per connection).",
            commands=NO_CHECK,
        ),
    ] = False
    procs: Annotated[Count, Knob("Generator worker processes.")] = 1
    message_bytes: Annotated[
        Annotated[int, Meta(ge=64, le=1_000_000)],
        Knob("Message text size in bytes, 64 to 1,000,000 (default 100)."),
    ] = 100
    token: Annotated[
        str,
        Knob("Token template, {user} filled in (default '{user}', what --insecure-dev takes)."),
    ] = "{user}"
    jwt_secret: Annotated[
        str | None,
        Knob(
            "Sign HS256 JWTs (sub = user) with this secret instead of the token template.",
            envvar="RTBENCH_JWT_SECRET",
            secret=True,
        ),
    ] = None
    connect_timeout: Annotated[
        Positive, Knob("Seconds for upgrade, hello and joins of one connection (default 10).")
    ] = 10.0
    connect_concurrency: Count = 256  # handshakes in flight per worker process
    max_cpu_percent: Annotated[float, Meta(gt=0, le=100)] = 95.0  # generator saturation
    max_loop_lag_ms: Positive = 50.0  # generator saturation: worst event-loop lag
    seed: Annotated[
        int | None, Knob("Random seed (Poisson arrivals, DM, typing and receipt choices).")
    ] = None
    # recovery runs (docs/RECOVERY.md)
    faults: Annotated[
        list[str],
        Knob(
            "Inject a fault, KIND[:ARG]@TIME (repeatable): restart[:term|:kill], "
            "cut[:SHARE], blackhole[:SECONDS], kill-worker[:N], drain[:BATCH/INTERVAL]; "
            "e.g. restart:kill@10s, drain:1000/100ms@8s. "
            "docs/RECOVERY.md.",
            flag="--fault",
            commands=("run",),  # check takes one --fault of its own; Locust injects none
        ),
    ] = []
    server_cmd: Annotated[
        str | None,
        Knob(
            "Start the server with this command (and restart it for restart faults); "
            "{port} becomes a free port the target then points at.",
            commands=("run", "check"),  # Locust starts no server
        ),
    ] = None
    reconnect: ReconnectPolicy | None = None  # reconnect + heartbeat settings; on with faults

    def resolved(self) -> Scenario:
        """A copy with every ``None`` replaced by the kind's default, validated."""
        given = _set_fields(self)
        values = {**DEFAULTS[self.scenario], **given}
        values.update(_shares_the_protocol_lacks(values, given))
        if values.get("faults") and values.get("reconnect") is None:
            values["reconnect"] = ReconnectPolicy()  # a fault run's clients come back
        scenario = Scenario(**values)
        scenario.validate()
        return scenario

    def with_overrides(self, **overrides: Any) -> Scenario:
        """Apply CLI flags (``None`` means the flag was not given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return msgspec.convert({**msgspec.to_builtins(self), **given}, Scenario)
        except msgspec.ValidationError as exc:
            raise ScenarioError(f"invalid scenario option: {exc}") from None

    def validate(self) -> None:
        users = self.users or 0
        if self.closed_loop and self.scenario is not Kind.RTT:
            raise ScenarioError("--closed-loop applies to the rtt scenario only")
        needs_rate = (Kind.CHAT, Kind.SOAK, Kind.FANOUT, Kind.RTT)
        if self.scenario in needs_rate and not self.rate and not self.closed_loop:
            raise ScenarioError(f"scenario {self.scenario} needs --rate above 0")
        if self.scenario in (Kind.CHAT, Kind.SOAK) and users < 2:
            raise ScenarioError("a chat needs at least 2 users")
        if self.procs > self.connections:
            raise ScenarioError(
                f"--procs {self.procs} is more than the {self.connections} connections to spread"
            )
        per_proc = math.ceil(self.connections / self.procs)
        if per_proc > FD_PER_PROCESS:
            need = math.ceil(self.connections / FD_PER_PROCESS)
            raise ScenarioError(
                f"{self.connections:,} connections need at least --procs {need} "
                f"(at most {FD_PER_PROCESS:,} sockets per process here)"
            )
        if self.target is not None:
            check_target(self.target, self.protocol)
        self._validate_recovery()

    def _validate_recovery(self) -> None:
        from loadtest.faults.schedule import FaultError, parse_faults

        if self.reconnect is not None and (problem := self.reconnect.validate()):
            raise ScenarioError(problem)
        if not self.faults:
            return
        if self.closed_loop:
            raise ScenarioError("--closed-loop stalls at a lost reply: use --rate with faults")
        try:
            parse_faults(self.faults, duration_s=self.duration, server_cmd=self.server_cmd)
        except FaultError as exc:
            raise ScenarioError(str(exc)) from None

    @property
    def connections(self) -> int:
        """Every connection the run opens (fanout adds its publishers)."""
        users = self.users or 0
        if self.scenario is Kind.FANOUT:
            rooms = math.ceil(users / (self.room_size or users or 1))
            return users + rooms * (self.publishers or 1)
        return users

    def describe(self) -> dict[str, Any]:
        """The resolved parameters as recorded in results.json (run.config)."""
        out = msgspec.to_builtins(self)
        if out.get("jwt_secret"):
            out["jwt_secret"] = "***"
        options = out.get("protocol_options") or {}
        for secret in ("auth", "headers"):  # may hold credentials written in the file
            if options.get(secret):
                options[secret] = "***"
        return out


_SHARE_FEATURES = {"dm_share": "dm", "typing_share": "typing", "receipt_share": "receipts"}


def _shares_the_protocol_lacks(values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Default chat shares (DMs, typing, receipts) become 0 for a protocol without them.

    The defaults suit the reference protocol; a Socket.IO or generic server that has no
    DMs still runs ``chat`` with no flags. A share the user set is kept (and refused by
    the feature check if the protocol lacks it). Building the adapter here also checks
    ``protocol_options``, so a bad template is a usage error before anything starts.
    """
    from loadtest.adapters import AdapterError, make_adapter

    try:
        adapter = make_adapter(values.get("protocol", "reference"), values.get("protocol_options"))
    except AdapterError as exc:
        raise ScenarioError(str(exc)) from None
    return {
        share: 0.0
        for share, feature in _SHARE_FEATURES.items()
        if share not in given and values.get(share) and feature not in adapter.features
    }


def _set_fields(scenario: Scenario) -> dict[str, Any]:
    return {
        f: getattr(scenario, f)
        for f in scenario.__struct_fields__
        if getattr(scenario, f) is not None
    }


_CHAT = {
    "users": 200,
    "room_size": 10,
    "rate": 1.0,
    "dm_share": 0.1,
    "typing_share": 0.2,
    "receipt_share": 0.2,
    "ramp": 5.0,
    "duration": 30.0,
}

DEFAULTS: dict[Kind, dict[str, Any]] = {
    Kind.CONNECT: {"users": 1000, "ramp": 10.0, "duration": 30.0, "rate": 0.0},
    Kind.CHAT: _CHAT,
    Kind.SOAK: {**_CHAT, "users": 500, "rate": 0.5, "duration": 600.0, "window": 60.0},
    Kind.FANOUT: {
        "users": 1000,
        "room_size": 1000,
        "publishers": 1,
        "rate": 10.0,
        "ramp": 5.0,
        "duration": 30.0,
    },
    Kind.RTT: {"users": 10, "rate": 10.0, "ramp": 1.0, "duration": 20.0},
}
"""Defaults of each kind; ``rtbench run KIND --help`` and docs/LOADTEST.md show them."""


def check_target(target: str, protocol: str = "reference") -> None:
    """A target the protocol can dial (its adapter says which URL schemes work)."""
    from loadtest.adapters import AdapterError, adapter_class

    try:
        problem = adapter_class(protocol).target_problem(target)
    except AdapterError as exc:
        raise ScenarioError(str(exc)) from None
    if problem is not None:
        raise ScenarioError(problem)


def cli_options(command: Command) -> tuple[Option, ...]:
    """The scenario fields ``command`` offers as flags (their :class:`Knob`), in order."""
    return options_of(Scenario, command)


def load_scenario_file(path: str | Path) -> Scenario:
    """Read a TOML scenario file (unresolved: CLI flags still apply on top)."""
    return load_toml_struct(path, Scenario, "scenario file", ScenarioError)


def scenario_from(name_or_file: str) -> Scenario:
    """A built-in kind name (``chat``) or a ``.toml`` file path."""
    if name_or_file.endswith(".toml"):
        return load_scenario_file(name_or_file)
    try:
        return Scenario(scenario=Kind(name_or_file))
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise ScenarioError(
            f"unknown scenario {name_or_file!r}; built in: {kinds}, or a FILE.toml"
        ) from None


__all__ = [
    "DEFAULTS",
    "EXAMPLES_DIR",
    "Kind",
    "Knob",
    "Option",
    "Scenario",
    "ScenarioError",
    "check_target",
    "cli_options",
    "load_scenario_file",
    "scenario_from",
]
