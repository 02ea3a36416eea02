"""The scenario flags as Locust command-line arguments, and the scenario they resolve to.

``rtbench run`` and the Locust users read the same scenario model
(``loadtest.scenarios.Scenario``): a built-in kind or a TOML file, then flags. Locust
already owns three of those knobs, so they map onto Locust's own options:

- ``-H/--host`` is the target, ``-u/--users`` the users, ``--processes`` the worker
  processes (Locust's own master/worker engine);
- every other scenario knob for Locust (a field's ``Knob``, ``loadtest.scenarios.knobs``)
  is a Locust custom argument with the same name and help as ``rtbench run``'s flag
  (``--rate``, ``--room-size``, ``--ramp`` ...), shown in the web UI's start form under
  "Custom parameters".

Connections open over ``--ramp`` seconds, and Locust's spawn rate follows from it; a
spawn rate given with ``-r`` (or changed in the web UI's form) paces the ramp instead,
unless ``--ramp`` is given too. This module imports neither Locust nor gevent, so the
``rtbench`` command and tests read it without monkey-patching anything.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from loadtest.scenarios import Scenario, ScenarioError, cli_options, scenario_from

LOCUST_OWN = {"target": "-H", "users": "-u", "procs": "--processes"}
"""Scenario knobs that are Locust's own options (``rtbench locust``'s flag: Locust's)."""


@dataclass(frozen=True)
class Arg:
    """One scenario field (or output option) exposed as a Locust custom argument."""

    field: str  # Scenario field name
    kind: type  # float, int, str or bool (a flag)
    help: str
    envvar: str | None = None  # read from this environment variable too
    secret: bool = False  # through the environment only: never on argv, not in the web UI
    name: str | None = None  # the flag when it is not --field-name

    @property
    def flag(self) -> str:
        return self.name or "--" + self.field.replace("_", "-")


SCENARIO_ARGS: tuple[Arg, ...] = tuple(
    Arg(option.field, option.kind, option.help, option.knob.envvar, option.knob.secret, option.flag)
    for option in cli_options("locust")
    if option.field not in LOCUST_OWN
)
"""The scenario's knobs for Locust (``Knob`` on ``Scenario``'s fields) that are Locust
custom arguments; ``LOCUST_OWN`` map onto Locust's own -H, -u and --processes."""

OUTPUT_ARGS: tuple[Arg, ...] = (
    Arg("slo", str, "SLO file (TOML) the verdicts, the Realtime SLO tab and the exit code use"),
    Arg("out", str, "write DIR/results.json (and report.html) when the run ends"),
    Arg("junit", str, "write JUnit XML verdicts to this file"),
    Arg("summary_md", str, "write a Markdown summary to this file"),
)


EXPORT_ARGS: tuple[Arg, ...] = (
    Arg("metrics_listen", str, "serve the run's live metrics for Prometheus at HOST:PORT"),
    Arg("remote_write", str, "push the live metrics to this Prometheus remote-write URL"),
    Arg("otlp", str, "push the live metrics to this OTLP/HTTP endpoint"),
    Arg("native_histograms", bool, "--remote-write: send native histograms too"),
)
"""The live-export options (``rtbench.cli.export_options``), read by the master."""


def add_arguments(parser: Any) -> None:
    """Add the scenario arguments to Locust's parser (``init_command_line_parser``)."""
    # Locust's parser takes its extra keywords (include_in_web_ui...) on the parser itself,
    # not on argument groups.
    parser.add_argument(
        "--scenario",
        default="chat",
        include_in_web_ui=True,
        help="connect | chat | fanout | rtt | soak | FILE.toml (default chat)",
    )
    for arg in SCENARIO_ARGS:
        extra: dict[str, Any] = {"include_in_web_ui": not arg.secret, "help": arg.help}
        if arg.envvar:
            extra["env_var"] = arg.envvar
        if arg.secret:
            extra["is_secret"] = True
        if arg.kind is bool:
            parser.add_argument(arg.flag, action="store_true", default=False, **extra)
        else:
            parser.add_argument(arg.flag, type=arg.kind, default=None, **extra)
    for arg in OUTPUT_ARGS:
        parser.add_argument(arg.flag, default=None, help=arg.help, include_in_web_ui=False)
    for arg in EXPORT_ARGS:
        if arg.kind is bool:
            parser.add_argument(
                arg.flag, action="store_true", default=False, help=arg.help, include_in_web_ui=False
            )
        else:
            parser.add_argument(arg.flag, default=None, help=arg.help, include_in_web_ui=False)


def _given(value: Any) -> Any:
    """Locust's web form sends empty strings for fields left blank."""
    return None if value in ("", None) else value


def resolve(options: argparse.Namespace | Any, *, users: int | None, procs: int) -> Scenario:
    """The resolved scenario from Locust's parsed options (raises ScenarioError).

    ``users`` is Locust's ``-u`` when the person gave it (headless Locust replaces a
    missing ``-u`` with 1, so the caller says whether it was given); ``procs`` is how
    many Locust processes share the load, for the per-process socket limit.
    """
    base = scenario_from(str(_given(getattr(options, "scenario", None)) or "chat"))
    overrides: dict[str, Any] = {}
    for arg in SCENARIO_ARGS:
        value = _given(getattr(options, arg.field, None))
        if arg.kind is bool:
            value = True if value in (True, "true", "True", "on", "1") else None
        elif value is not None:
            try:
                value = arg.kind(value)
            except (TypeError, ValueError):
                kind = arg.kind.__name__
                raise ScenarioError(f"{arg.flag} {value!r} is not a valid {kind}") from None
        overrides[arg.field] = value
        if value is None and arg.envvar and os.environ.get(arg.envvar):
            overrides[arg.field] = os.environ[arg.envvar]
    host = _given(getattr(options, "host", None))
    scenario = base.with_overrides(target=host, users=users, procs=procs, **overrides)
    resolved = scenario.resolved()
    if resolved.target is None:
        raise ScenarioError("no target: give -H ws://HOST:PORT (or target = ... in the file)")
    problem = native_only(resolved)
    if problem:
        raise ScenarioError(problem)
    return resolved


def native_only(scenario: Scenario) -> str | None:
    """Why the Locust users cannot run ``scenario`` as given (None: they can).

    Fault injection (``faults``, ``server_cmd``) is the native coordinator's: it times
    each fault against the run's clock and may start the server itself. Ignoring the
    faults silently would report a run without them as a recovery run.
    """
    if scenario.faults or scenario.server_cmd:
        return (
            "faults and server_cmd are for `rtbench run` (docs/RECOVERY.md); the Locust "
            "users reconnect after any loss but do not inject faults"
        )
    return None


def spawn_rate(scenario: Scenario) -> float:
    """Connections per second that open them all over the scenario's ramp."""
    ramp = scenario.ramp or 0.0
    return scenario.connections / ramp if ramp > 0 else float(max(scenario.connections, 1))


def locust_args(flags: dict[str, Any]) -> list[str]:
    """Locust command-line arguments for ``rtbench run``-style flags (``None``: not given).

    ``target``, ``users`` and ``procs`` become ``-H``, ``-u`` and ``--processes``
    (``LOCUST_OWN``); a secret (the JWT secret) is left to the environment so it never
    shows in a process listing.
    """
    args: list[str] = []
    if flags.get("target") is not None:
        args += [LOCUST_OWN["target"], str(flags["target"])]
    if flags.get("users") is not None:
        args += [LOCUST_OWN["users"], str(flags["users"])]
    if flags.get("procs") not in (None, 1):
        args += [LOCUST_OWN["procs"], str(flags["procs"])]
    for arg in (*SCENARIO_ARGS, *OUTPUT_ARGS, *EXPORT_ARGS):
        value = flags.get(arg.field)
        if value is None or arg.secret:
            continue
        if arg.kind is bool:
            if value:
                args.append(arg.flag)
            continue
        args += [arg.flag, str(value)]
    return args
