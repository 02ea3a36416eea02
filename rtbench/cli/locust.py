"""``rtbench locust``: a scenario as Locust users, with the web UI or ``--headless``.

It takes ``rtbench run``'s arguments and flags (the scenario's generated from the
``Scenario`` struct as run's are, the rest read from ``run_command``, so the two cannot
drift), checks them with the same code, and runs
``locust -f loadtest/locustfile.py`` with the flags mapped onto Locust's options
(``--target`` is ``-H``, ``--users`` is ``-u``, ``--procs`` is ``--processes``; the rest
are the locustfile's own arguments). Anything after ``--`` goes to Locust unchanged.
Locust's exit code is the verdicts' (``rtbench.exitcodes``); afterwards the results the
master wrote are rendered like ``rtbench run``'s (report.html, JUnit, Markdown).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from loadtest.scenarios import cli_options
from rtbench.cli import UserError
from rtbench.cli.export_options import export_settings
from rtbench.cli.run import run_command
from rtbench.cli.scenario_options import overrides, own_parameters, parameters

HELP = """Run SCENARIO as Locust users: Locust's web UI with a Realtime SLO tab, or --headless.

SCENARIO and the flags are `rtbench run`'s. Headless runs exit with the SLO verdicts'
code: 0 pass, 1 a target fails, 2 usage, 3 unreachable, 4 inconclusive. Spread
the users with --procs N (Locust processes here), or over machines with --master on one
and `rtbench locust --worker --master-host HOST` on the others. Arguments after `--`
go to Locust unchanged (e.g. `-- --csv out/stats`).
"""

NATIVE_ONLY = frozenset({"quiet"})
"""``rtbench run``'s own options Locust does not take (its console output). The scenario's
knobs it does not take (fault injection: the native coordinator schedules faults against
a server it may start; Locust's runner has no such clock) are not offered, not ignored:
their ``Knob`` leaves out ``locust``."""


def locustfile() -> Path:
    """The locustfile shipped in the package (``loadtest/locustfile.py``)."""
    import importlib.util

    spec = importlib.util.find_spec("loadtest.locustfile")  # without importing it (Locust does)
    if spec is None or spec.origin is None:
        raise UserError("loadtest/locustfile.py is missing from this installation")
    return Path(spec.origin)


def _signature() -> inspect.Signature:
    """``rtbench run``'s parameters, SCENARIO optional (a worker takes it from the master),
    the scenario's options for Locust, plus Locust's own switches."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "scenario",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=str | None,
            default=typer.Argument(
                None, help="connect | chat | fanout | rtt | soak | FILE.toml (not on a --worker)"
            ),
        ),
        *parameters("locust"),
    ]
    params += [param for param in own_parameters(run_command) if param.name not in NATIVE_ONLY]
    extra: list[tuple[str, Any, Any]] = [
        ("headless", bool, typer.Option(False, "--headless", help="No web UI: run, print, exit.")),
        ("web_host", str, typer.Option("127.0.0.1", "--web-host", help="Web UI address.")),
        ("web_port", int, typer.Option(8089, "--web-port", help="Web UI port.")),
        ("master", bool, typer.Option(False, "--master", help="Run the Locust master only.")),
        ("worker", bool, typer.Option(False, "--worker", help="Run Locust worker(s) only.")),
        ("master_host", str | None, typer.Option(None, "--master-host", help="Master address.")),
        ("master_port", int | None, typer.Option(None, "--master-port", help="Master port.")),
        (
            "expect_workers",
            int | None,
            typer.Option(None, "--expect-workers", help="--master --headless: workers to await."),
        ),
    ]
    for name, annotation, default in extra:
        params.append(inspect.Parameter(name, keyword, annotation=annotation, default=default))
    return inspect.Signature(params, return_annotation=int)


def locust_command(ctx: typer.Context, **flags: Any) -> int:
    command = locust_argv(flags, list(ctx.args))
    out, junit, summary_md = flags.get("out"), flags.get("junit"), flags.get("summary_md")
    with tempfile.TemporaryDirectory(prefix="rtbench-locust-") as scratch:
        results_dir = out or ((junit or summary_md) and Path(scratch))
        if results_dir and not flags.get("worker"):
            command += ["--out", str(results_dir)]
        env = dict(os.environ)
        for option in cli_options("locust"):  # a secret travels in its environment variable
            envvar = option.knob.envvar
            if option.knob.secret and envvar and flags.get(option.field):
                env[envvar] = flags[option.field]
        try:
            code = subprocess.call(command, env=env)
        except KeyboardInterrupt:
            raise UserError("interrupted", code=130) from None
        if results_dir and (junit or summary_md or out):
            _render(Path(results_dir), out, junit, summary_md)
    return code


def locust_argv(flags: dict[str, Any], extra: list[str]) -> list[str]:
    """The Locust command line for ``rtbench locust``'s flags (checked first: exit 2)."""
    from loadtest.locust.options import locust_args

    command = [sys.executable, "-m", "locust", "-f", str(locustfile())]
    if flags.get("worker"):
        if flags.get("scenario"):
            raise UserError("a --worker takes its scenario from the master: drop SCENARIO")
        command.append("--worker")
        command += _pairs(flags, ("master_host", "--master-host"), ("master_port", "--master-port"))
        if flags.get("procs") not in (None, 1):
            command += ["--processes", str(flags["procs"])]
        return command + extra
    _check(flags)
    given = overrides(flags, "locust")
    given["slo"] = flags.get("slo")
    for name in ("metrics_listen", "remote_write", "otlp", "native_histograms"):
        given[name] = flags.get(name)
    export_settings(  # a malformed address: exit 2 before Locust starts
        flags.get("metrics_listen"), flags.get("remote_write"), flags.get("otlp")
    )
    command += ["--scenario", flags["scenario"], *locust_args(given)]  # secrets: environment
    if flags.get("headless"):
        command.append("--headless")
    command += ["--web-host", flags["web_host"], "--web-port", str(flags["web_port"])]
    if flags.get("master"):
        command.append("--master")
        command += _pairs(flags, ("expect_workers", "--expect-workers"))
    elif (flags.get("procs") or 1) > 1 and "--master-bind-port" not in extra:
        # --processes runs a master here; on Locust's fixed port (5557) two such runs on
        # one machine would collide, so it gets a free loopback port of its own
        port = str(_free_port())
        command += ["--master-bind-host", "127.0.0.1", "--master-bind-port", port]
        command += ["--master-port", port]
    return command + extra


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pairs(flags: dict[str, Any], *names: tuple[str, str]) -> list[str]:
    out: list[str] = []
    for name, flag in names:
        if flags.get(name) is not None:
            out += [flag, str(flags[name])]
    return out


def _check(flags: dict[str, Any]) -> None:
    """The scenario and SLO file as `rtbench run` would read them: one line and exit 2."""
    from loadtest.adapters import AdapterError, make_adapter
    from loadtest.locust.options import native_only
    from loadtest.plan import Plan
    from loadtest.scenarios import ScenarioError, scenario_from
    from rtbench.slo import SLOFileError, load_slo

    if not flags.get("scenario"):
        raise UserError("give a SCENARIO (connect, chat, fanout, rtt, soak or FILE.toml)")
    try:
        scenario = (
            scenario_from(flags["scenario"]).with_overrides(**overrides(flags, "locust")).resolved()
        )
        load_slo(flags.get("slo"))
        problem = make_adapter(scenario.protocol, scenario.protocol_options).check(
            Plan(scenario, "").features()
        )
    except (ScenarioError, SLOFileError, AdapterError) as exc:
        raise UserError(str(exc)) from None
    if problem:
        raise UserError(f"{problem}, which scenario {scenario.scenario} needs")
    native = native_only(scenario)
    if native:
        raise UserError(native)
    if flags.get("headless") and scenario.target is None:
        raise UserError("no target: give --target ws://HOST:PORT (or target = ... in the file)")


def _render(
    results_dir: Path, out: Path | None, junit: Path | None, summary_md: Path | None
) -> None:
    """report.html, JUnit and Markdown from the results.json the Locust master wrote."""
    from rtbench.cli.run import write_all
    from rtbench.results import ResultsFileError, read_results

    path = results_dir / "results.json"
    if not path.exists():
        return
    try:
        results = read_results(path)
    except ResultsFileError as exc:
        typer.echo(f"rtbench: warning: {exc}", err=True)
        return
    for written in write_all(results, out, junit, summary_md):
        if written != path:
            typer.echo(f"wrote {written}")


# typer reads the generated signature; a function declares no __signature__ attribute
locust_command.__signature__ = _signature()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command(
        "locust",
        help=HELP,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(locust_command)


__all__ = ["locust_argv", "locustfile", "register"]
