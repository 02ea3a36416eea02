"""Fixtures for the engine's tests: tiny servers on loopback, the real reference server,
and a helper that runs a scenario through the real engine (worker processes and all)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from loadtest.engine.coordinator import run_load
from loadtest.judge import build_results
from loadtest.run.outcome import Outcome
from loadtest.scenarios import Kind, Scenario
from rtbench.results import Results
from rtbench.slo import SLO, LatencyTarget
from tests.loadtest.tiny_servers import Faults, TinyEchoServer, TinyReferenceServer
from tests.support.fixtures import reference_server, start_server  # noqa: F401  (shared)


def _factory(cls: type[TinyReferenceServer]) -> Iterator[Callable[..., TinyReferenceServer]]:
    servers: list[TinyReferenceServer] = []

    def start(**faults: object) -> TinyReferenceServer:
        server = cls(Faults(**faults)).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def tiny() -> Iterator[Callable[..., TinyReferenceServer]]:
    """Factory: ``tiny(drop_every=7)`` starts a tiny reference server with those faults."""
    yield from _factory(TinyReferenceServer)


@pytest.fixture
def echo() -> Iterator[Callable[..., TinyReferenceServer]]:
    """Factory: ``echo(delay_ms=5)`` starts a tiny echo server."""
    yield from _factory(TinyEchoServer)


def scenario(kind: str, target: str, **fields: object) -> Scenario:
    """A short scenario: quick ramp, short drain, then the given fields."""
    base: dict[str, object] = {"ramp": 0.3, "drain": 3.0, "seed": 7}
    base.update(fields)
    return Scenario(scenario=Kind(kind), target=target, **base).resolved()  # type: ignore[arg-type]


UNTIMED = SLO(delivery_latency=LatencyTarget(threshold_ms=60_000))
"""The SLO of tests about accounting: a delivery target no loaded machine misses, so an
exit of OK asserts every other verdict without timing anything (speed is for
benchmarks/). With the default 100 ms a busy CI runner made the run inconclusive, which
is the right answer there, not the test's subject."""


def run(sc: Scenario, slo: SLO | None = None) -> tuple[Outcome, Results]:
    """Run through the real engine (worker subprocesses) and build results.json's model."""
    outcome = asyncio.run(asyncio.wait_for(run_load(sc), 120))
    return outcome, build_results(outcome, slo or SLO())
