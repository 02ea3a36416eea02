"""Fixtures for the recovery tests: fault runs through the real engine and a real server.

``fault_run`` runs a chat scenario with ``--fault``s and ``--server-cmd`` exactly as
``rtbench run`` does (rtbench starts the reference server itself, on a port it picks,
with a SQLite store in the test's folder), and returns the results.json model.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.faults.server import prepare
from loadtest.judge import build_results
from loadtest.run.entry import run_scenario
from loadtest.scenarios import Kind, Scenario
from rtbench.results import Results
from rtbench.slo import SLO
from tests.scaleout.conftest import pg_dsn, redis_prefix  # noqa: F401
from tests.support.fixtures import reference_server, start_server  # noqa: F401

SERVE = f"{shlex.quote(sys.executable)} -c 'from rtbench.entry import run; run()' serve"


def serve_cmd(*args: str) -> str:
    """A ``--server-cmd`` that runs this checkout's reference server on ``{port}``."""
    return " ".join([SERVE, "--port", "{port}", "--insecure-dev", *map(shlex.quote, args)])


def chat(server_cmd: str, faults: list[str], **fields: Any) -> Scenario:
    """A small chat with faults: 200 users in rooms of 10, DMs, typing and receipts."""
    cmd, target = prepare(server_cmd, None)
    base: dict[str, Any] = {
        "users": 200,
        "room_size": 10,
        "rate": 1.0,
        "ramp": 1.0,
        "duration": 8.0,
        "drain": 10.0,
        "seed": 11,
    }
    base.update(fields)
    return Scenario(
        scenario=Kind.CHAT, target=target, faults=faults, server_cmd=cmd, **base
    ).resolved()


def run_with_faults(scenario: Scenario, log_dir: Path) -> Results:
    outcome = asyncio.run(
        asyncio.wait_for(run_scenario(scenario, log_dir=log_dir, ontime_ms=100.0), 180)
    )
    return build_results(outcome, SLO())


@pytest.fixture
def fault_run(tmp_path: Path) -> Callable[..., Results]:
    """``fault_run(["cut@3s"], users=100)``: a chat through those faults, judged."""

    def go(faults: list[str], server_cmd: str | None = None, **fields: Any) -> Results:
        cmd = server_cmd or serve_cmd("--store", f"sqlite:///{tmp_path / 'server.db'}")
        return run_with_faults(chat(cmd, faults, **fields), tmp_path)

    return go
