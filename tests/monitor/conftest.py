"""Fixtures of the monitor tests: target servers as processes (so they can be stopped and
started again on the same port), an in-process monitor, and polling with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest

from monitor.config import MonitorConfig, Settings, TargetConfig, settle
from monitor.httpclient import http_get
from monitor.service import Monitor

ROOT = Path(__file__).resolve().parents[2]
ECHO_TARGET = Path(__file__).with_name("echo_target.py")
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on now (bind 0, read it, release it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TargetProcess:
    """A server process on a fixed port that a test stops and starts again, by PID."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> float:
        """Start and wait for its ``ready`` line; returns the time it was ready."""
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True
        )
        try:
            return self._wait_ready(timeout)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def _wait_ready(self, timeout: float) -> float:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buffered = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.05)
            if readable:
                buffered += os.read(fd, 4096)
            if b"ready" in buffered:
                return time.time()
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv} exited with {self.proc.returncode}: {buffered!r}")
        raise RuntimeError(f"{self.argv} not ready in {timeout}s")

    def stop(self) -> float:
        """SIGTERM (SIGKILL after 5 s); returns the time the process was gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        return time.time()


@pytest.fixture
def echo_target() -> Iterator[tuple[TargetProcess, int]]:
    port = free_port()
    target = TargetProcess([sys.executable, str(ECHO_TARGET), str(port)])
    target.start()
    try:
        yield target, port
    finally:
        target.stop()


class ReferenceTarget:
    """The real reference server (tests/support) behind the same stop/start as TargetProcess."""

    def __init__(self, workdir: Path) -> None:
        from tests.support.server import ServerProcess

        self.server = ServerProcess(workdir)

    def start(self) -> float:
        self.server.start(self.server.port or None)
        return time.time()

    def stop(self) -> float:
        self.server.stop("kill")  # an abrupt outage: no goodbye, no close frame
        return time.time()


@pytest.fixture(params=["echo", "reference"])
def outage_target(request, tmp_path) -> Iterator[tuple[object, TargetConfig]]:
    """A stoppable target of each protocol, with the monitor's config for it."""
    if request.param == "echo":
        port = free_port()
        target: TargetProcess | ReferenceTarget = TargetProcess(
            [sys.executable, str(ECHO_TARGET), str(port)]
        )
        target.start()
        config = echo_target_config(port)
    else:
        target = ReferenceTarget(tmp_path / "server")
        target.start()
        config = TargetConfig(url=target.server.url, name="ref", protocol="reference")
    try:
        yield target, config
    finally:
        target.stop()


def echo_target_config(port: int) -> TargetConfig:
    return TargetConfig(
        url=f"ws://127.0.0.1:{port}/",
        name="echo",
        protocol="echo",
        health_url=f"http://127.0.0.1:{port}/healthz",
    )


def echo_config(port: int, db: Path, **overrides: object) -> Settings:
    return monitor_config(echo_target_config(port), db, **overrides)


def monitor_config(target: TargetConfig, db: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "target": [target],
        "interval": 0.5,
        "listen": "127.0.0.1:0",
        "db": str(db),
    }
    fields.update(overrides)
    return settle(MonitorConfig(**fields))  # type: ignore[arg-type]


def lenient_slo(tmp_path: Path) -> str:
    """Thresholds these tests do not judge, set out of the way.

    Recovery: above the planned outage, so /healthz can turn green again. Delivery
    latency: one probe slowed past 100 ms by a busy shared machine would fail p99 over a
    handful of probes and keep /healthz at 503; latency verdicts have tests of their own.
    """
    path = tmp_path / "slo.toml"
    path.write_text(
        "[recovery]\npercentile = 99\nthreshold_ms = 30000\n"
        "[delivery_latency]\npercentile = 99\nthreshold_ms = 5000\n"
    )
    return str(path)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Monitor]:
    monitor = Monitor(settings)
    await monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()


async def get(monitor: Monitor, path: str) -> tuple[int, bytes]:
    assert monitor.address is not None
    host, port = monitor.address
    return await asyncio.wait_for(http_get(f"http://{host}:{port}{path}"), 10)


async def healthz(monitor: Monitor) -> tuple[int, dict]:
    status, body = await get(monitor, "/healthz")
    return status, msgspec.json.decode(body)


async def poll(check: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    """Call ``check`` until it returns something truthy, or fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)
