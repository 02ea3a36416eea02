"""``rtbench check``: does this service keep its four promises? One run, four verdicts.

One timeline (docs/CHECK.md):

1. ramp to the SLO's connection count (``[connections] min``) and hold every connection
   to the end, each answering heartbeats;
2. chat on the held connections (a scenario file or flags choose the mix and rate);
3. a fault a third of the way in: a restart of the server rtbench started
   (``--server-cmd``; SIGTERM, or SIGKILL with ``--kill``), otherwise a cut of every
   connection through the fault proxy;
4. from start to end, the monitor's own probes (``monitor.prober``: fresh clients apart
   from the load that connect, send and receive once per interval) for the uptime verdict.

Every target is measured in every check: one that could not be (no fault possible, too
few connections, no probe through) fails with the reason. Exit codes are ``rtbench
run``'s: 0 pass, 1 a target fails, 2 usage, 3 unreachable, 4 inconclusive. This module
only composes: the load is ``loadtest``'s, the probes the monitor's, every rule
``rtbench.slo``'s, and the results model ``rtbench.results``'s.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any

import typer

from loadtest.scenarios import cli_options
from rtbench.cli import UserError
from rtbench.cli.run import run_command
from rtbench.cli.scenario_options import overrides, own_parameters, parameters

if TYPE_CHECKING:
    from loadtest.scenarios import Kind, Scenario

HELP = """Prove the four promises in one run: uptime, delivery latency, connections, recovery.

Ramps to the SLO file's connection count and holds every connection, chats on them,
injects a fault a third of the way in (a restart of the server rtbench started with
--server-cmd, else a cut through the fault proxy), and probes the target from start to
end as the monitor does. Prints one verdict table; writes results.json and the report
(HTML with the run's timeline, JUnit with one case per target, Markdown) with --out.
Exit codes: 0 every target passes, 1 one fails (or could not be measured), 2 usage,
3 unreachable, 4 inconclusive (the load generator's own delay could flip a verdict).
"""

RUN_OWN = own_parameters(run_command)
"""``rtbench run``'s options beside the scenario's (SLO file, outputs, live metrics,
``rtbench.cli.export_options``): they mean the same here, declared there once."""
SHARED = (*(option.field for option in cli_options("check")), *(p.name for p in RUN_OWN))
"""Every option ``rtbench check`` shares: the scenario's knobs for check, then ``run``'s."""

DEFAULTS: dict[str, Any] = {
    "room_size": 10,
    "rate": 0.1,
    "duration": 90.0,
    "drain": 5.0,
}
"""The default check's chat: 10,000 users x 0.1 msg/s in rooms of 10 is 1,000 messages
and 9,000 deliveries a second, a load two cores carry beside 10,000 held connections
(docs/CHECK.md has the arithmetic)."""
CONNECTIONS_PER_PROC = 6_000
"""Connections one generator worker ramps and reconnects without lagging its own clock
(a reconnect storm after a restart is the heaviest moment); more spread over processes."""
RAMP_PER_S = 1_000.0
"""Connections opened per second by default: 10,000 in 10 s on this kind of machine."""
FAULT_AT = 1 / 3
"""The fault comes a third of the way into the load: a steady flow before it to compare
with, and room after it for every client to come back and the flow to settle."""


def register(app: typer.Typer) -> None:
    app.command("check", help=HELP)(check_command)


def check_command(**flags: Any) -> int:
    """Typer calls this with the options of ``_signature()``."""
    from loadtest.faults.server import ServerError, prepare
    from loadtest.scenarios import Kind, Scenario, ScenarioError, scenario_from
    from rtbench.cli.export_options import export_settings
    from rtbench.slo import SLOFileError, load_slo

    try:
        slo = load_slo(flags["slo"])
    except SLOFileError as exc:
        raise UserError(str(exc)) from None
    if flags["probe_interval"] <= 0:
        raise UserError("--probe-interval must be above 0 seconds")
    if flags["kill"] and flags["fault"]:
        raise UserError(
            "--kill picks the default restart's signal; with --fault write restart:kill@T"
        )
    export = export_settings(
        flags["metrics_listen"],
        flags["remote_write"],
        flags["otlp"],
        bool(flags["native_histograms"]),
    )
    try:
        base = scenario_from(flags["scenario"]) if flags["scenario"] else None
        if base is not None and base.scenario is not Kind.CHAT:
            raise UserError(
                f"a check chats on the connections it holds: scenario {base.scenario} cannot "
                "(give a chat scenario file, or none)"
            )
        protocol = flags["protocol"] or (base.protocol if base else "reference")
        options = base.protocol_options if base else {}
        base = base or Scenario(scenario=_kind_for(protocol, options))
        server_cmd = flags["server_cmd"] or base.server_cmd
        target = flags["target"] or base.target
        if server_cmd:
            server_cmd, target = prepare(server_cmd, target)
        if target is None:
            raise UserError(
                "no target: give --target ws://HOST:PORT, or --server-cmd for rtbench to start it"
            )
        connections = flags["connections"] or base.users or slo.connections.min
        given = overrides(flags, "check")
        values: dict[str, Any] = {
            **DEFAULTS,
            "ramp": max(2.0, round(connections / RAMP_PER_S, 1)),
            "procs": max(1, math.ceil(connections / CONNECTIONS_PER_PROC)),
            **_set_in_file(base),
            **{key: value for key, value in given.items() if value is not None},
        }
        if base.scenario is Kind.RTT:
            values.pop("room_size")  # round trips have no rooms
        fault = flags["fault"] or _default_fault(
            bool(server_cmd), flags["kill"], float(values["duration"])
        )
        values.update(target=target, server_cmd=server_cmd, users=connections, faults=[fault])
        resolved = base.with_overrides(**values).resolved()
    except (ScenarioError, ServerError) as exc:
        raise UserError(str(exc)) from None
    from rtbench.cli.checkrun import execute_check

    return execute_check(
        resolved,
        slo=slo,
        probe_interval=flags["probe_interval"],
        out=flags["out"],
        junit=flags["junit"],
        summary_md=flags["summary_md"],
        quiet=flags["quiet"],
        export=export,
    )


SIZES = ("room_size", "rate", "ramp", "duration", "drain", "procs")
"""What a scenario file may size; the check's defaults fill the rest."""


def _set_in_file(scenario: Scenario) -> dict[str, Any]:
    """The fields a scenario file set (a file's procs of 1 is the struct's default)."""
    values = {key: getattr(scenario, key) for key in SIZES}
    if scenario.procs == 1:
        values.pop("procs")
    return {key: value for key, value in values.items() if value is not None}


def _kind_for(protocol: str, options: dict[str, Any]) -> Kind:
    """Chat for a protocol with rooms; round trips (the delivery) for one with only an echo."""
    from loadtest.adapters import AdapterError, Feature, make_adapter
    from loadtest.scenarios import Kind

    try:
        features = make_adapter(protocol, options).features
    except AdapterError as exc:
        raise UserError(str(exc)) from None
    return Kind.CHAT if Feature.ROOMS in features else Kind.RTT


def _default_fault(server_started: bool, kill: bool, duration: float) -> str:
    at = f"{duration * FAULT_AT:.3g}s"
    if server_started:
        return f"restart:{'kill' if kill else 'term'}@{at}"
    if kill:
        raise UserError("--kill restarts the server rtbench starts: give --server-cmd")
    return f"cut@{at}"


def _own_parameters() -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter(
            "connections",
            keyword,
            default=typer.Option(
                None,
                "--connections",
                "-c",
                help="Connections to hold (default: the SLO file's [connections] min).",
            ),
            annotation=int | None,
        ),
        inspect.Parameter(
            "fault",
            keyword,
            default=typer.Option(
                None,
                "--fault",
                help=(
                    "The fault, KIND[:ARG]@TIME (default: restart@1/3 of --duration with "
                    "--server-cmd, else cut@1/3 through the fault proxy). docs/RECOVERY.md."
                ),
            ),
            annotation=str | None,
        ),
        inspect.Parameter(
            "kill",
            keyword,
            default=typer.Option(
                False, "--kill", help="Restart with SIGKILL (a crash) instead of SIGTERM."
            ),
            annotation=bool,
        ),
        inspect.Parameter(
            "probe_interval",
            keyword,
            default=typer.Option(
                1.0,
                "--probe-interval",
                help="Seconds between uptime probes (the monitor's probe: connect, send, receive).",
            ),
            annotation=float,
        ),
    ]


def _signature() -> tuple[inspect.Signature, dict[str, Any]]:
    """A scenario file, the scenario's options, ``run``'s own, and the check's own."""
    scenario = inspect.Parameter(
        "scenario",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(
            None, help="A chat scenario FILE.toml (default: the built-in chat)."
        ),
        annotation=str | None,
    )
    params = [scenario, *parameters("check"), *RUN_OWN, *_own_parameters()]
    annotations = {p.name: p.annotation for p in params}
    annotations["return"] = int
    return inspect.Signature(params, return_annotation=int), annotations


# typer reads the generated signature; a function declares no __signature__ attribute
check_command.__signature__, check_command.__annotations__ = _signature()  # type: ignore[attr-defined]
