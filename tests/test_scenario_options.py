"""The scenario's flags come from the ``Scenario`` struct: a new knob is one field.

Every command that takes a scenario (``rtbench run``, ``rtbench check``, ``rtbench
locust`` and Locust's own parser behind it) offers exactly the fields whose ``Knob``
names it, with the knob's flag, alias, environment variable and help text. Which command
leaves a field out is said once, on the field (``Knob.commands``; no knob: file only);
the one further exception is Locust's, ``LOCUST_OWN`` (target, users and processes are
Locust's own -H, -u and --processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from typing import Any

import pytest
import typer.main

from loadtest.locust.options import EXPORT_ARGS, LOCUST_OWN, OUTPUT_ARGS, add_arguments
from loadtest.scenarios import Knob, Scenario
from loadtest.scenarios.knobs import EVERY, options_of
from rtbench.cli import app

COMMANDS = ("run", "check", "locust")


def knobs(command: str) -> dict[str, Knob]:
    """The struct's fields that ``command`` should offer, read here from the annotations."""
    hints = typing.get_type_hints(Scenario, include_extras=True)
    found = {}
    for field in Scenario.__struct_fields__:
        for meta in getattr(hints[field], "__metadata__", ()):
            if isinstance(meta, Knob) and command in meta.commands:
                found[field] = meta
    return found


def flag(field: str, knob: Knob) -> str:
    return knob.flag or "--" + field.replace("_", "-")


def scenario_params(command: str) -> dict[str, Any]:
    """The command's options named after a scenario field (SCENARIO itself is an argument)."""
    click_command = typer.main.get_command(app).commands[command]
    return {
        p.name: p
        for p in click_command.params
        if p.name in Scenario.__struct_fields__ and p.name != "scenario"
    }


class Recorder:
    """Stands in for Locust's argument parser: what ``add_arguments`` declares."""

    def __init__(self) -> None:
        self.arguments: dict[str, dict[str, Any]] = {}

    def add_argument(self, name: str, **options: Any) -> None:
        self.arguments[name] = options


def test_every_command_offers_a_knob() -> None:
    assert set(knobs("run")) >= set(knobs("check")) | set(knobs("locust"))
    assert {"users", "rate", "duration", "closed_loop", "faults"} <= set(knobs("run"))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_scenario_options_are_the_structs_knobs_for_it(command: str) -> None:
    params = scenario_params(command)
    expected = knobs(command)
    assert set(params) == set(expected), "offered by hand, or a knob left out"
    for field, knob in expected.items():
        param = params[field]
        assert param.opts == [flag(field, knob), *([knob.short] if knob.short else [])]
        assert param.help == knob.help, field
        assert param.envvar == knob.envvar
        assert param.default == (False if param.is_flag else None)  # None: not given


def test_locusts_parser_takes_the_knobs_for_locust() -> None:
    parser = Recorder()
    add_arguments(parser)
    expected = knobs("locust")
    assert set(LOCUST_OWN) <= set(expected)  # Locust's own options stand for knobs it is offered
    own = {"--scenario"} | {arg.flag for arg in (*OUTPUT_ARGS, *EXPORT_ARGS)}
    custom = {name: options for name, options in parser.arguments.items() if name not in own}
    assert set(custom) == {flag(f, k) for f, k in expected.items() if f not in LOCUST_OWN}
    for field, knob in expected.items():
        if field in LOCUST_OWN:
            continue
        options = custom[flag(field, knob)]
        assert options["help"] == knob.help, field
        assert options["include_in_web_ui"] is not knob.secret
        assert options.get("env_var") == knob.envvar


WIDER = """
import argparse, contextlib, importlib, io, json, subprocess
from typing import Annotated

import loadtest.scenarios as scenarios
from loadtest.scenarios import Knob


class Scenario(scenarios.Scenario, kw_only=True):
    extra_knob: Annotated[int | None, Knob("An extra knob for this test.")] = None
    run_only: Annotated[str | None, Knob("A knob of run only.", commands=("run",))] = None


scenarios.Scenario = Scenario  # as if both fields were written in the struct

from loadtest.locust import options as locust_options
from rtbench.cli import main

run, checkrun = (importlib.import_module(f"rtbench.cli.{name}") for name in ("run", "checkrun"))
seen = {}
run.execute = lambda scenario, **_: seen.update(run=scenario.extra_knob) or 0
checkrun.execute_check = lambda scenario, **_: seen.update(check=scenario.extra_knob) or 0
subprocess.call = lambda command, env: seen.update(locust=command) or 0
for command in ("run", "check", "locust"):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main([command, "--help"])
    seen[command + " --help"] = [f for f in ("--extra-knob", "--run-only") if f in out.getvalue()]
target = ["-t", "ws://127.0.0.1:1", "--extra-knob", "7"]
seen["codes"] = [
    main(["run", "chat", *target, "-q"]),
    main(["check", *target, "-q"]),
    main(["locust", "chat", *target, "--headless"]),
]


class Parser:
    def __init__(self):
        self.arguments = {}

    def add_argument(self, name, **options):
        self.arguments[name] = options["help"]


parser = Parser()
locust_options.add_arguments(parser)
seen["parser"] = {k: v for k, v in parser.arguments.items() if k in ("--extra-knob", "--run-only")}
node = argparse.Namespace(scenario="chat", host="ws://127.0.0.1:1", extra_knob="8")
seen["node"] = locust_options.resolve(node, users=None, procs=1).extra_knob
print(json.dumps(seen))
"""


def test_a_new_field_with_a_knob_is_a_flag_of_every_command_that_takes_it() -> None:
    """Two fields added to the struct (in a fresh interpreter, before any command is
    built) and nothing else: each command shows and takes what its knob says."""
    result = subprocess.run(
        [sys.executable, "-c", WIDER], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["run --help"] == ["--extra-knob", "--run-only"]
    assert seen["check --help"] == seen["locust --help"] == ["--extra-knob"]
    assert seen["codes"] == [0, 0, 0]
    assert seen["run"] == seen["check"] == 7  # into the resolved scenario
    locust_argv = seen["locust"]
    assert locust_argv[locust_argv.index("--extra-knob") + 1] == "7"
    assert seen["parser"] == {"--extra-knob": "An extra knob for this test."}
    assert seen["node"] == 8  # a Locust node reads it from its own parser's options


def test_the_flag_table_in_loadtest_md_is_the_structs() -> None:
    """docs/LOADTEST.md's scenario flags are written from the knobs: a knob added, renamed
    or re-worded without ``python -m loadtest.scenarios.flagtable`` fails here."""
    from loadtest.scenarios import flagtable

    page = flagtable.PAGE.read_text()
    assert flagtable.rewrite(page) == page, "run: python -m loadtest.scenarios.flagtable"
    table = flagtable.flag_table()
    for command in EVERY:
        for option in options_of(Scenario, command):
            assert f"`{option.flag}" in table


def test_the_flag_table_follows_a_changed_knob() -> None:
    """The check can fail: a page whose table is stale, or that lost its markers."""
    from loadtest.scenarios import flagtable

    page = flagtable.PAGE.read_text()
    stale = page.replace("| `--seed N` |", "| `--seed N` (old words) |")
    assert stale != page and flagtable.rewrite(stale) == page
    with pytest.raises(ValueError, match="no"):
        flagtable.rewrite(page.replace(flagtable.END, ""))
