"""A fault run's machinery around the load: the server, the proxy, and the injections.

``FaultSession`` is what ``rtbench run --fault`` adds to a run (``loadtest.run.entry``
enters it). Entered before the
workers start, it starts the server (``--server-cmd``) and the proxy fleet (for
``cut``/``blackhole``) and tells the engine which URL the clients must use; at the go
it injects each fault at its time and records when it really began and ended, on the
same monotonic clock the workers stamp their recoveries with; on exit it ends
everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse, urlunparse

from loadtest.faults.fleet import ProxyFleet
from loadtest.faults.schedule import NEEDS_PROXY, Fault, FaultKind, FaultRunError
from loadtest.faults.server import ManagedServer, ServerError, address_of, admin_get
from rtbench.protocol import ADMIN_DRAIN_PATH

__all__ = ["FaultRunError", "FaultSession", "Injection"]


@dataclass
class Injection:
    """A fault as it happened (ns on CLOCK_MONOTONIC)."""

    fault: Fault
    started_ns: int = 0
    ended_ns: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class FaultSession:
    """Server, proxy and fault injections for one run (an async context manager)."""

    def __init__(
        self,
        faults: list[Fault],
        *,
        target: str,
        connections: int,
        server_cmd: str | None = None,
        log_dir: Path | None = None,
        seed: int | None = None,
        ontime_ms: float = 100.0,
    ) -> None:
        self.faults = faults
        self.target = target
        self.connections = connections
        self.server_cmd = server_cmd
        self.log_dir = log_dir or Path(".")
        self.seed = seed
        self.ontime_ms = ontime_ms  # deliveries faster than this count in the message flow
        self.server: ManagedServer | None = None
        self.proxy: ProxyFleet | None = None
        self.injections = [Injection(f) for f in faults]
        self.task: asyncio.Task[None] | None = None
        self.go_ns = 0
        self.proxy_stats: dict[str, Any] = {}

    async def __aenter__(self) -> FaultSession:
        try:
            if self.server_cmd:
                self.server = ManagedServer(
                    self.server_cmd, self.target, self.log_dir / "server.log"
                )
                await self.server.start()
                kills = any(f.kind is FaultKind.KILL_WORKER for f in self.faults)
                if kills and not await self.server.wait_workers(5.0):
                    raise ServerError(
                        "kill-worker: the server started by --server-cmd has no worker "
                        "processes (e.g. rtbench serve --workers 2)"
                    )
            if any(f.kind in NEEDS_PROXY for f in self.faults):
                self.proxy = ProxyFleet(
                    address_of(self.target),
                    ProxyFleet.shards_for(self.connections),
                    seed=self.seed,
                )
                await self.proxy.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def client_url(self, url: str) -> str:
        """The URL clients connect to: through the proxy when there is one."""
        if self.proxy is None:
            return url
        parts = urlparse(url)
        return urlunparse(parts._replace(netloc=f"127.0.0.1:{self.proxy.port}"))

    def begin(self, go_ns: int) -> None:
        """Schedule every fault relative to the go (the first scheduled send)."""
        self.go_ns = go_ns
        self.task = asyncio.get_running_loop().create_task(self._inject_all())

    async def _inject_all(self) -> None:
        for injection in self.injections:
            fault = injection.fault
            delay = (self.go_ns + int(fault.at_s * 1e9) - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            injection.started_ns = time.monotonic_ns()
            try:
                await self._inject(injection)
            except (ServerError, OSError, RuntimeError) as exc:
                injection.error = str(exc)
            injection.ended_ns = time.monotonic_ns()

    async def _inject(self, injection: Injection) -> None:
        fault = injection.fault
        details = injection.details
        if fault.kind is FaultKind.RESTART:
            assert self.server is not None
            details["signal"] = fault.signal
            details.update(await self.server.restart(fault.signal))
            details["pid"] = self.server.pid
        elif fault.kind is FaultKind.KILL_WORKER:
            assert self.server is not None
            details["killed_pids"] = self.server.kill_workers(fault.count)
        elif fault.kind is FaultKind.CUT:
            assert self.proxy is not None
            details["share"] = fault.share
            details["connections_reset"] = await self.proxy.cut(fault.share)
        elif fault.kind is FaultKind.BLACKHOLE:
            assert self.proxy is not None
            details["connections_held"] = await self.proxy.blackhole(True)
            try:
                await asyncio.sleep(fault.duration_s)
            finally:
                await self.proxy.blackhole(False)
            details["duration_s"] = fault.duration_s
        elif fault.kind is FaultKind.DRAIN:
            await self._drain(fault, details)

    async def _drain(self, fault: Fault, details: dict[str, Any]) -> None:
        """Ask the server (not the proxy) to drain; the fault lasts until its last batch.

        The admin token comes from ``RTBENCH_ADMIN_TOKEN``, which a server started by
        ``--server-cmd`` inherits too.
        """
        host, port = address_of(self.target)
        query = urlencode({"batch": fault.count, "interval_ms": round(fault.interval_s * 1000, 3)})
        status, body = await admin_get(
            host, port, f"{ADMIN_DRAIN_PATH}?{query}", os.environ.get("RTBENCH_ADMIN_TOKEN")
        )
        if status != 200:
            text = body.decode(errors="replace").strip()[:200]
            raise ServerError(f"{ADMIN_DRAIN_PATH} answered HTTP {status}: {text}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise ServerError(f"{ADMIN_DRAIN_PATH} answered HTTP 200 without JSON") from None
        details["batch"] = fault.count
        details["interval_ms"] = round(fault.interval_s * 1000, 3)
        details["clients_asked"] = answer.get("clients", 0)
        details["batches"] = batches = answer.get("batches", 0)
        if batches > 1:  # the server closes the last batch this long after the first
            await asyncio.sleep((batches - 1) * fault.interval_s)

    async def finished(self) -> None:
        """Wait for an injection still in progress (a restart near the end of the load)."""
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy_stats = await self.proxy.stats()
            await self.proxy.close()
            self.proxy = None
        if self.server is not None:
            await self.server.close()
            self.server = None

    def log(self) -> list[dict[str, Any]]:
        """The faults as they happened, seconds from the go (``run.faults``)."""
        out = []
        for injection in self.injections:
            entry: dict[str, Any] = {
                "spec": injection.fault.spec,
                "kind": injection.fault.kind.value,
                "at_s": injection.fault.at_s,
            }
            if injection.started_ns:
                entry["started_s"] = round((injection.started_ns - self.go_ns) / 1e9, 3)
                entry["ended_s"] = round((injection.ended_ns - self.go_ns) / 1e9, 3)
            else:
                entry["error"] = "not injected: the load ended first"
            entry.update(injection.details)
            if injection.error:
                entry["error"] = injection.error
            out.append(entry)
        return out
