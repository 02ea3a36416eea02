"""Wires the realtime users into Locust: arguments, messages, stats reports, tab, exit code.

Importing this module registers listeners on Locust's global events, so a locustfile
that imports the user classes gets everything:

- ``init_command_line_parser``: the scenario arguments (``loadtest.locust.options``);
- ``init``: per process, a ``Node`` where users run (worker or single process) and a
  ``Conductor`` where runs are driven (master or single process), their custom
  messages, and the Realtime SLO tab when there is a web UI;
- ``report_to_master`` / ``worker_report``: each worker's realtime snapshot rides on
  Locust's own stats report and is merged on the master for the live tab;
- ``test_stopping``: a test stopped early is judged as interrupted;
- ``quitting`` / ``quit``: the exit code follows the SLO verdicts (0 pass, 1 fail,
  3 unreachable, 4 inconclusive, 2 usage), and the verdicts are printed last.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadtest.locust import messages
from loadtest.locust.control import Conductor, MasterRun
from loadtest.locust.node import Node
from loadtest.locust.options import add_arguments, resolve, spawn_rate
from rtbench.exitcodes import ExitCode


def node_of(environment: Any) -> Node:
    return environment.rtbench_node


def conductor_of(environment: Any) -> Conductor:
    return environment.rtbench_conductor


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    add_arguments(parser)


def _raise_fd_limit() -> None:
    """A process may hold up to its hard limit of sockets (20,000 here), not Locust's 10,000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _check_options(options: argparse.Namespace, environment_defaults: dict[str, Any]) -> Any:
    """Refuse a bad scenario or SLO file at start, with one line and exit code 2.

    In the web UI the target may still come from the start form, so a missing one is
    not an error there. Locust's ``-u`` and ``-r`` default to the scenario's users and
    the spawn rate of its ramp (Locust itself would make them 1), so the web UI's form
    starts from the scenario too; ``environment_defaults`` records what was filled in.
    """
    from loadtest.adapters import AdapterError, make_adapter
    from loadtest.plan import Plan
    from loadtest.scenarios import ScenarioError
    from rtbench.slo import SLOFileError, load_slo

    interactive = not (options.headless or getattr(options, "autostart", False))
    try:
        slo = load_slo(getattr(options, "slo", None))
        checked = options
        if interactive and not options.host:  # a copy: the real options keep no host
            checked = argparse.Namespace(**{**vars(options), "host": "ws://placeholder"})
        scenario = resolve(checked, users=options.num_users, procs=options.processes or 1)
        problem = make_adapter(scenario.protocol, scenario.protocol_options).check(
            Plan(scenario, "").features()
        )
        if problem:
            raise ScenarioError(f"{problem}, which scenario {scenario.scenario} needs")
    except (ScenarioError, AdapterError, SLOFileError) as exc:
        sys.stderr.write(f"rtbench: {exc}\n")
        sys.exit(ExitCode.USAGE)
    if options.num_users is None:
        options.num_users = scenario.users
    if options.spawn_rate is None:  # shown in the web UI's form; changing it sets the ramp
        options.spawn_rate = spawn_rate(scenario)
        environment_defaults["spawn_rate"] = options.spawn_rate
    return slo


@events.init.add_listener
def _install(environment: Any, runner: Any, web_ui: Any = None, **_: Any) -> None:
    _raise_fd_limit()
    if runner is None:
        return
    options = environment.parsed_options
    if not isinstance(runner, WorkerRunner):
        defaults: dict[str, Any] = {}
        slo = _check_options(options, defaults)
        conductor = Conductor(environment, slo=slo, default_spawn_rate=defaults.get("spawn_rate"))
        environment.rtbench_conductor = conductor
        for kind in messages.TO_MASTER:
            runner.register_message(kind, conductor.on_message)
        if isinstance(runner, MasterRunner):
            environment.events.worker_report.add_listener(conductor.on_worker_report)
        environment.events.test_stopping.add_listener(lambda **_: conductor.finish())
        environment.events.quitting.add_listener(_exit_code)
        environment.events.quit.add_listener(lambda **_: _print_results(environment))
        if web_ui is not None:
            from loadtest.locust import webui

            webui.install(web_ui, conductor, _snapshots_for(environment, runner))
    if not isinstance(runner, MasterRunner):
        node = Node(environment)
        environment.rtbench_node = node
        for kind in messages.TO_WORKERS:
            runner.register_message(kind, node.on_message)
        environment.events.quitting.add_listener(lambda **_: node.close())
        if isinstance(runner, WorkerRunner):
            environment.events.report_to_master.add_listener(_report(node))


def _report(node: Node) -> Any:
    def add_snapshot(client_id: str, data: dict) -> None:
        snapshot = node.snapshot()
        if snapshot is not None:
            data[messages.REPORT_KEY] = snapshot

    return add_snapshot


def _snapshots_for(environment: Any, runner: Any) -> Any:
    """Where the live tab reads each process's figures: the workers' last stats reports,
    or, in a single-process run, this process's own node."""
    if isinstance(runner, MasterRunner):
        return lambda run: [v.report for v in run.nodes.values() if v.report is not None]

    def local(run: MasterRun) -> list[dict]:
        snapshot = node_of(environment).snapshot()
        return [snapshot] if snapshot is not None else []

    return local


def _exit_code(environment: Any, **_: Any) -> None:
    """The process exit code is the SLO verdicts' (rtbench.exitcodes), not Locust's own."""
    conductor = conductor_of(environment)
    results = conductor.finish()
    if results is not None:
        environment.process_exit_code = results.exit_code
    elif conductor.error is not None:
        environment.process_exit_code = ExitCode.USAGE


def _print_results(environment: Any) -> None:
    """Verdicts after Locust's own tables (results.json was written when the run ended)."""
    conductor = conductor_of(environment)
    run = conductor.run
    if run is None or run.results is None:
        if conductor.error:
            sys.stderr.write(f"rtbench: {conductor.error}\n")
        return
    from rich.console import Console

    from loadtest.console import print_summary

    console = Console() if sys.stdout.isatty() else Console(width=120)
    print_summary(console, run.results)
    out = getattr(environment.parsed_options, "out", None)
    if out:
        console.print(f"wrote {Path(out) / 'results.json'}", highlight=False)
