"""The coordinator: starts the worker processes, keeps them in step, merges what they count.

It holds no sockets to the target. It gives the go only when every worker has opened and
joined its connections, so the expected recipients of every message are known exactly;
after the last send it drains until every expected delivery has arrived (or the drain
timeout passes) and then merges counters and HDR histograms exactly (``loadtest.run.outcome``,
the merge every driver shares). One machine-wide
CLOCK_MONOTONIC serves every process on Linux, so send times from one worker and receive
times from another are comparable (results.json: environment.clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from loadtest.adapters import Feature, make_adapter
from loadtest.engine import wire
from loadtest.plan import Plan, bitmap_count, bitmap_or
from loadtest.run.outcome import Outcome, ProcessReport, Progress, RunFrame, all_in, merge
from loadtest.scenarios import Kind, Scenario, ScenarioError
from loadtest.serverinfo import probe
from rtbench.histogram import LatencyHistogram

if TYPE_CHECKING:
    from loadtest.export import Exporters
    from loadtest.export.feed import LiveFeed
    from loadtest.faults.runner import FaultSession

GO_LEAD_S = 0.25
"""Sends start this long after the go, so every worker has it before the first send."""
DRAIN_POLL_S = 0.05


class EngineError(RuntimeError):
    """The generator itself failed (a worker died); the run says nothing about the target."""


class _WorkerHandle:
    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc
        self.counters: dict[str, int] = {}
        self.ticks: dict[int, wire.Tick] = {}
        self.ready: wire.Ready | None = None
        self.send_done: wire.SendDone | None = None
        self.final: wire.Final | None = None
        self.reader: asyncio.Task | None = None

    def send(self, message: msgspec.Struct) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(wire.frame(message))


async def run_load(
    scenario: Scenario,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    server_probe: Callable[[str], Awaitable[dict[str, Any]]] | None = probe,
    faults: FaultSession | None = None,
    exporters: Exporters | None = None,
) -> Outcome:
    """Run a resolved scenario against ``scenario.target``; every worker is ended on return.

    ``server_probe`` asks the target about itself (RSS from /healthz or /metrics) before the
    go and at the end of the load; None skips it. ``faults`` (a ``FaultSession`` the
    caller has entered) puts its proxy in the clients' path and injects its faults from
    the go. ``exporters`` (``loadtest.export``) get the run's merged figures once a second
    and its final ones at the end.
    """
    if scenario.target is None:
        raise ScenarioError("no target: give --target ws://HOST:PORT or target in the file")
    adapter = make_adapter(scenario.protocol, scenario.protocol_options)
    plan = Plan(scenario, secrets.token_hex(3) + "-")
    problem = adapter.check(plan.features())
    if problem:
        raise ScenarioError(f"{problem}, which scenario {scenario.scenario} needs")
    url = adapter.url(scenario.target)
    if faults is not None:
        url = faults.client_url(url)
    run = _Run(scenario, plan, url, on_progress, server_probe)
    run.needs_acks = Feature.ACK in adapter.features
    run.faults = faults
    if exporters is not None and exporters.enabled:
        from loadtest.export.feed import LiveFeed

        run.live = LiveFeed(exporters, target_connections=plan.connections, t0_ns=run.t0)
    return await run.execute()


class _Run:
    def __init__(
        self,
        scenario: Scenario,
        plan: Plan,
        url: str,
        on_progress: Callable[[Progress], None] | None,
        server_probe: Callable[[str], Awaitable[dict[str, Any]]] | None,
    ) -> None:
        self.scenario = scenario
        self.plan = plan
        self.url = url
        self.on_progress = on_progress
        self.server_probe = server_probe
        self.inbox: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        self.workers: list[_WorkerHandle] = []
        self.t0 = time.monotonic_ns()
        self.started_wall = time.time()
        self.phase = "connecting"
        self.go_ns: int | None = None
        self.end_ns: int | None = None
        self.last_shown = -1
        self.server: dict = {}
        self.needs_acks = False  # the adapter acks sends: the drain also waits for acks
        self.faults: FaultSession | None = None
        self.live: LiveFeed | None = None  # live export (loadtest.export)

    # -- lifecycle -------------------------------------------------------------------------

    async def execute(self) -> Outcome:
        interrupted = False
        drained = False
        try:
            await self._probe_server("before")  # before any connection: the server's baseline
            await self._spawn()
            await self._wait_all(lambda w: w.ready is not None, self._connect_budget())
            live = bytearray((self.plan.connections + 7) // 8)
            for w in self.workers:
                assert w.ready is not None  # _wait_all returned: every worker is Ready
                bitmap_or(live, w.ready.live)
            ready = bitmap_count(live)
            if ready == 0:
                for w in self.workers:
                    w.send(wire.Finish())
            else:
                self.go_ns = time.monotonic_ns() + int(GO_LEAD_S * 1e9)
                duration = self.scenario.duration or 0.0  # (resolved: always set)
                self.end_ns = self.go_ns + int(duration * 1e9)
                self.phase = "holding" if self.plan.kind is Kind.CONNECT else "running"
                for w in self.workers:
                    w.send(wire.Go(start_ns=self.go_ns, live=bytes(live)))
                if self.faults is not None:
                    self.faults.begin(self.go_ns)
                run_budget = duration + GO_LEAD_S + 30
                await self._wait_all(lambda w: w.send_done is not None, run_budget)
                if self.faults is not None:
                    await self.faults.finished()
                await self._probe_server("at_peak")
                self.phase = "draining"
                drained = await self._drain()
                self.phase = "closing"
                for w in self.workers:
                    w.send(wire.Finish())
            await self._wait_all(lambda w: w.final is not None, 30)
        except (asyncio.CancelledError, KeyboardInterrupt):
            interrupted = True
            raise
        finally:
            await self._reap()
        outcome = self._outcome(drained, interrupted)
        if self.live is not None:
            self.live.finish(outcome)
        return outcome

    def _connect_budget(self) -> float:
        sc = self.scenario
        per_worker = math.ceil(self.plan.connections / sc.procs)
        rounds = math.ceil(per_worker / sc.connect_concurrency)
        return (sc.ramp or 0) + 2 * sc.connect_timeout * rounds + 30

    async def _spawn(self) -> None:
        for index in range(self.scenario.procs):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadtest.engine.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=2**26,
            )
            handle = _WorkerHandle(index, proc)
            handle.reader = asyncio.create_task(self._read(handle))
            self.workers.append(handle)
        for handle in self.workers:
            handle.send(
                wire.Start(
                    scenario=self.scenario,
                    worker=handle.index,
                    tag=self.plan.tag,
                    url=self.url,
                    t0_ns=self.t0,
                    ontime_ms=self.faults.ontime_ms if self.faults is not None else None,
                    live=self.live is not None,
                )
            )

    async def _read(self, handle: _WorkerHandle) -> None:
        assert handle.proc.stdout is not None
        while True:
            message = await wire.read_message(handle.proc.stdout, to_worker=False)
            await self.inbox.put((handle, message))
            if message is None or isinstance(message, wire.Final | wire.Fatal):
                return

    async def _wait_all(self, done: Callable[[_WorkerHandle], bool], budget_s: float) -> None:
        deadline = time.monotonic() + budget_s
        while not all(done(w) for w in self.workers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineError(f"generator workers did not answer within {budget_s:.0f} s")
            try:
                handle, message = await asyncio.wait_for(self.inbox.get(), remaining)
            except TimeoutError:
                continue
            self._take(handle, message)

    def _take(self, handle: _WorkerHandle, message: object) -> None:
        if message is None:
            if handle.final is None:
                raise EngineError(f"generator worker {handle.index} exited unexpectedly")
            return
        if isinstance(message, wire.Fatal):
            raise EngineError(f"generator worker {handle.index} failed: {message.message}")
        if isinstance(message, wire.Tick):
            handle.ticks[message.second] = message
            handle.counters = message.counters
            self._show(message.second)
            if self.live is not None:
                self.live.tick(handle.index, message, self.phase, len(self.workers))
        elif isinstance(message, wire.Counts):
            handle.counters = message.counters
        elif isinstance(message, wire.Ready):
            handle.ready = message
            handle.counters = message.counters
        elif isinstance(message, wire.SendDone):
            handle.send_done = message
            handle.counters = message.counters
            if self.live is not None:
                self.live.held = sum(w.send_done.held for w in self.workers if w.send_done)
        elif isinstance(message, wire.Final):
            handle.final = message
            handle.counters = message.counters

    def _total(self, name: str) -> int:
        return sum(w.counters.get(name, 0) for w in self.workers)

    async def _drain(self) -> bool:
        """Wait until every expected delivery (and ack) is in, or the drain timeout passes."""
        deadline = time.monotonic() + self.scenario.drain
        while True:
            if all_in(self.plan.kind, self.needs_acks, self._total):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                handle, message = await asyncio.wait_for(
                    self.inbox.get(), min(remaining, DRAIN_POLL_S)
                )
            except TimeoutError:
                continue
            self._take(handle, message)

    async def _probe_server(self, when: str) -> None:
        if self.server_probe is None:
            return
        with contextlib.suppress(Exception):
            found = await self.server_probe(self.url)
            if found:
                self.server[when] = found

    async def _reap(self) -> None:
        """End every worker we started, by its process handle: politely, then by force."""
        for w in self.workers:
            if w.proc.stdin is not None and not w.proc.stdin.is_closing():
                w.proc.stdin.close()
        for w in self.workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            if w.reader is not None:
                w.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w.reader

    # -- progress ---------------------------------------------------------------------------

    def _show(self, second: int) -> None:
        if self.on_progress is None or second <= self.last_shown:
            return
        if not getattr(self.on_progress, "enabled", True):  # a quiet view: skip the work
            return
        ticks = [t for w in self.workers if (t := w.ticks.get(second)) is not None]
        if len(ticks) < len(self.workers):
            return
        self.last_shown = second
        before = [w.ticks.get(second - 1) for w in self.workers]

        def delta(name: str) -> int:
            now = sum(t.counters.get(name, 0) for t in ticks)
            prev = sum(t.counters.get(name, 0) for t in before if t is not None)
            return now - prev

        p99 = None
        hist = LatencyHistogram()
        for w in self.workers:
            for s in range(max(1, second - 9), second + 1):  # p99 over the last 10 s
                tick = w.ticks.get(s)
                if tick is not None and tick.delivery_hdr:
                    hist.merge(LatencyHistogram.decode(tick.delivery_hdr))
        if hist.count:
            p99 = hist.percentile_ms(99.0)
        sc = self.scenario
        elapsed = (time.monotonic_ns() - self.t0) / 1e9
        total = (sc.ramp or 0) + (sc.duration or 0) + sc.drain
        self.on_progress(
            Progress(
                phase=self.phase,
                elapsed_s=elapsed,
                total_s=total,
                connections=sum(t.open_now for t in ticks),
                target_connections=self.plan.connections,
                failed=self._total("failed"),
                sends_per_s=delta("sent"),
                deliveries_per_s=delta("delivered"),
                p99_ms=p99,
                errors=self._total("errors"),
                cpu_percent=sum(t.cpu_percent for t in ticks),
            )
        )

    # -- merging ------------------------------------------------------------------------------

    def _outcome(self, drained: bool, interrupted: bool) -> Outcome:
        frame = RunFrame(
            self.scenario,
            self.plan,
            self.url,
            t0_ns=self.t0,
            started_wall=self.started_wall,
            go_ns=self.go_ns,
            end_ns=self.end_ns,
        )
        reports = [
            ProcessReport(w.ready.live if w.ready is not None else None, w.ticks, w.final)
            for w in self.workers
        ]
        return merge(
            frame,
            reports,
            drained=drained,
            interrupted=interrupted,
            server=self.server,
            faults=self.faults,
        )
