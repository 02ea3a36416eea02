"""The ``rtbench`` command.

Each subcommand lives in its own module exposing ``register(app)``; heavy
imports (locust, gevent, the server) stay inside the command functions so that
``rtbench --help`` is instant and gevent's monkey-patching never leaks into
commands that do not want it.

Errors a person can fix (a bad flag, an unreadable file) end with one line on
stderr and exit code 2; see ``rtbench.exitcodes``.
"""

from __future__ import annotations

import importlib
import sys

import typer

try:  # typer >= 0.22 vendors its own click; its exceptions are the ones raised
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exc  # type: ignore[no-redef]  # same API, real click

from rtbench import __version__
from rtbench.exitcodes import ExitCode

app = typer.Typer(
    name="rtbench",
    help=(
        "Prove and guard the promises of realtime WebSocket services: uptime, delivery "
        "latency, concurrent connections and recovery after a lost connection."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Subcommand modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "rtbench.cli.serve",
    "rtbench.cli.token",
    "rtbench.cli.check",
    "rtbench.cli.run",
    "rtbench.cli.locust",
    "rtbench.cli.demo",
    "rtbench.cli.report",
    "rtbench.cli.compare",
    "rtbench.cli.monitor",
    "rtbench.cli.bench",
)


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rtbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """rtbench: load, measure and monitor realtime WebSocket services."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn every usage problem into one line and exit 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="rtbench", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        # ``rtbench`` or a group with no arguments: the help text is the right answer.
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        return ExitCode.USAGE
    except click_exc.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "rtbench"
        typer.echo(f"{where}: {exc.format_message()} (see `{where} --help`)", err=True)
        return ExitCode.USAGE
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except UserError as exc:
        typer.echo(f"rtbench: {exc}", err=True)
        return exc.code
    except click_exc.ClickException as exc:
        typer.echo(f"rtbench: {exc.format_message()}", err=True)
        return ExitCode.USAGE
    return int(result or 0)


def run() -> None:
    try:
        code = main()
    except (BrokenPipeError, SystemExit) as exc:  # `rtbench --help | head` closes the pipe
        code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 0
    sys.exit(code)
