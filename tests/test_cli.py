"""The ``rtbench`` command as a person meets it: help, version and bad flags.

Run as a real subprocess (the installed console script's module), so import-time
failures of any subcommand module show up here and not in a user's terminal.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtbench import __version__
from rtbench.cli import COMMAND_MODULES


def rtbench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


COMMANDS = [name.rsplit(".", 1)[1] for name in COMMAND_MODULES]


def test_every_command_module_exists_and_is_listed_in_help() -> None:
    result = rtbench("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f" {command} " in result.stdout, f"{command} missing from rtbench --help"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_readable_help(command: str) -> None:
    result = rtbench(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: rtbench {command}")
    assert "--help" in result.stdout
    summary = result.stdout.split("\n\n", 2)[1].strip()
    assert summary and not summary.startswith("Options"), f"{command} has no description"


def test_version() -> None:
    result = rtbench("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rtbench {__version__}"


def test_a_bad_flag_is_one_line_and_exit_2() -> None:
    result = rtbench("run", "chat", "--no-such-flag")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--no-such-flag" in lines[0]


def test_an_unknown_command_is_exit_2() -> None:
    result = rtbench("frobnicate")
    assert result.returncode == 2
    assert "frobnicate" in result.stderr
