"""The master's side of a realtime Locust run: hands out connections, keeps time, judges.

On the Locust master (or in a single-process run) a ``Conductor`` drives each test as
the native coordinator drives a run: connection indices go to users by role, the go
comes when every connection is up (so expected recipients are exact), the drain waits
for every expected delivery, and the finals of every process merge through the run
core every driver shares (``loadtest.run.outcome.merge``) into ``rtbench.results.Results``
with the same verdicts, the same SLO file and the same exit codes as ``rtbench run``. The load shape
(``loadtest.locust.shape``) asks it how many users to run and when the test is over.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import msgspec
from gevent.event import Event

from loadtest.adapters import Feature, make_adapter
from loadtest.export import Exporters, ExportSettings, RunLabels, new_run_id, open_exporters
from loadtest.export.feed import LiveFeed
from loadtest.judge import build_results, delay_cause_of, exit_code, verdict_bound
from loadtest.locust import messages
from loadtest.locust.node import DELAY_HISTOGRAMS
from loadtest.locust.options import resolve
from loadtest.plan import Plan, bitmap_count, bitmap_or
from loadtest.run.outcome import Outcome, ProcessReport, RunFrame, all_in, merge
from loadtest.run.report import Final, Tick
from loadtest.scenarios import Kind, Scenario
from rtbench import slo as slo_mod
from rtbench.histogram import LatencyHistogram
from rtbench.results import Results, write_results

log = logging.getLogger("rtbench.locust")

BOUNDED = {slo_mod.Target.DELIVERY_LATENCY: "delivery", slo_mod.Target.RECOVERY: "recovery"}
"""The latency (``loadtest.judge.DELAY_PARTS``) behind each verdict the generator's delay bounds."""
GO_LEAD_S = 0.5
"""Sends start this long after the go, so every worker (on any machine) has it in time."""
FINAL_WAIT_S = 15.0
INTERRUPT_WAIT_S = 5.0
CLOCK_NOTE = (
    "Locust: wall clock (time.time_ns) stamps sends and receipts in every Locust process; "
    "exact on one machine, as good as the machines' clock sync (NTP) across machines"
)


@dataclass
class NodeView:
    """What the master knows of one Locust process in one run."""

    ready: bytearray
    counters: dict[str, int] = field(default_factory=dict)
    ticks: dict[int, Tick] = field(default_factory=dict)
    done: bool = False
    final: Final | None = None
    report: dict | None = None  # the last realtime snapshot from Locust's stats report


class MasterRun:
    """One test: its plan, who holds which connection, and where it stands."""

    def __init__(self, conductor: Conductor, scenario: Scenario, slo: slo_mod.SLO) -> None:
        self.conductor = conductor
        self.scenario = scenario
        self.slo = slo
        self.tag = secrets.token_hex(3) + "-"
        self.plan = Plan(scenario, self.tag)
        self.adapter = make_adapter(scenario.protocol, scenario.protocol_options)
        problem = self.adapter.check(self.plan.features())
        if problem:
            raise ValueError(f"{problem}, which scenario {scenario.scenario} needs")
        self.url = self.adapter.url(scenario.target or "")
        self.t0_ns = time.time_ns()
        self.started_wall = time.time()
        # live export (loadtest.export): labelled with the id results.json will carry
        self.run_id = new_run_id()
        labels = RunLabels(
            self.run_id, scenario.scenario.value, scenario.target or "", scenario.protocol
        )
        self.exporters: Exporters = open_exporters(conductor.export, labels, slo)
        self.live: LiveFeed | None = None
        if self.exporters.enabled:
            # the nodes' ticks are stamped on the wall clock (time.time_ns), as t0_ns is
            self.live = LiveFeed(
                self.exporters,
                target_connections=self.plan.connections,
                t0_ns=self.t0_ns,
                clock=time.time_ns,
            )
        spec = messages.RunSpec(self.tag, scenario, self.url, self.t0_ns, live=bool(self.live))
        self.spec = messages.encode(spec)
        self.free = {role: deque(indices) for role, indices in messages.roles(self.plan).items()}
        self.nodes: dict[str, NodeView] = {}
        self.settled = 0
        self.phase = "connecting"
        self.go_ns: int | None = None
        self.end_ns: int | None = None
        self.drained = False
        self.results: Results | None = None
        self.bounds: dict[slo_mod.Target, float | None] = {}  # with the results
        self.changed = Event()
        self.greenlet = gevent.spawn(self._conduct)

    # -- messages from the nodes ---------------------------------------------------------------

    def node(self, node_id: str) -> NodeView:
        view = self.nodes.get(node_id)
        if view is None:
            view = self.nodes[node_id] = NodeView(bytearray((self.plan.connections + 7) // 8))
        return view

    def on_claim(self, node_id: str, role: str, wanted: int) -> dict:
        free = self.free.get(role, deque())
        indices = [free.popleft() for _ in range(min(wanted, len(free)))]
        if indices:
            self.node(node_id)
        return {"run": self.spec, "role": role, "asked": wanted, "indices": indices}

    def on_ready(self, node_id: str, ready: list[int], failed: list[int]) -> None:
        view = self.node(node_id)
        for i in ready:
            view.ready[i >> 3] |= 1 << (i & 7)
        self.settled += len(ready) + len(failed)
        self.changed.set()

    def on_tick(self, node_id: str, tick: Tick) -> None:
        view = self.node(node_id)
        view.ticks[tick.second] = tick
        view.counters = tick.counters
        if self.live is not None:
            self.live.tick(node_id, tick, self.phase, len(self.nodes))
        self.changed.set()

    def on_counts(self, node_id: str, counters: dict[str, int], done: bool = False) -> None:
        view = self.node(node_id)
        view.counters = counters
        view.done = view.done or done
        self.changed.set()

    def on_final(self, node_id: str, final: Final) -> None:
        view = self.node(node_id)
        view.final = final
        view.counters = final.counters
        self.changed.set()

    # -- the run's course ----------------------------------------------------------------------

    def _wait(self, condition: Any, budget_s: float) -> bool:
        """Wait until ``condition()`` holds or the budget is spent; True when it held."""
        deadline = time.monotonic() + budget_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            self.changed.wait(min(remaining, 0.25))
        return True

    def total(self, name: str) -> int:
        return sum(view.counters.get(name, 0) for view in self.nodes.values())

    def _conduct(self) -> None:
        sc = self.scenario
        budget = 2 * (sc.ramp or 0) + sc.connect_timeout + 30
        self._wait(lambda: self.settled >= self.plan.connections, budget)
        live = bytearray((self.plan.connections + 7) // 8)
        for view in self.nodes.values():
            bitmap_or(live, view.ready)
        if bitmap_count(live) == 0:
            self._close_and_judge(drained=False)
            return
        self.go_ns = time.time_ns() + int(GO_LEAD_S * 1e9)
        self.end_ns = self.go_ns + int((sc.duration or 0) * 1e9)
        self.phase = "holding" if self.plan.kind is Kind.CONNECT else "running"
        go = {"tag": self.tag, "start_ns": self.go_ns, "live": bytes(live)}
        self.conductor.send(messages.GO, go)
        participants = list(self.nodes.values())
        self._wait(lambda: all(v.done for v in participants), (sc.duration or 0) + 40)
        self.phase = "draining"
        self.drained = self._wait(self._drained, sc.drain)
        self._close_and_judge(self.drained)

    def _drained(self) -> bool:
        return all_in(self.plan.kind, Feature.ACK in self.adapter.features, self.total)

    def _close_and_judge(self, drained: bool, interrupted: bool = False) -> None:
        self.phase = "closing"
        self.conductor.send(messages.FINISH, {"tag": self.tag})
        views = list(self.nodes.values())
        wait_s = INTERRUPT_WAIT_S if interrupted else FINAL_WAIT_S
        self._wait(lambda: all(v.final is not None for v in views), wait_s)
        self.results = self.judge(drained, interrupted)
        self.conductor.write(self.results)  # now: a web UI session may run many tests
        self.phase = "done"
        self.exporters.close()  # waits for the final scrape (a greenlet: the UI goes on)
        for line in self.exporters.warnings:
            log.warning("rtbench: %s", line)

    def interrupt(self) -> None:
        """The test was stopped before the run ended (Stop button, --run-time, Ctrl-C)."""
        if self.phase == "done":
            return
        if self.phase == "closing":  # already collecting the finals: let it finish
            self.greenlet.join(FINAL_WAIT_S + 5)
            return
        self.greenlet.kill(block=True)
        self._close_and_judge(drained=False, interrupted=True)

    # -- verdicts ------------------------------------------------------------------------------

    def outcome(self, drained: bool, interrupted: bool) -> Outcome:
        # the nodes' ticks and scheduled-send seconds count from t0_ns on the wall clock
        frame = RunFrame(
            self.scenario,
            self.plan,
            self.url,
            t0_ns=self.t0_ns,
            started_wall=self.started_wall,
            go_ns=self.go_ns,
            end_ns=self.end_ns,
        )
        reports = [ProcessReport(bytes(v.ready), v.ticks, v.final) for v in self.nodes.values()]
        return merge(frame, reports, drained=drained, interrupted=interrupted)

    def judge(self, drained: bool, interrupted: bool) -> Results:
        """results.json's model, judged as a native run is (engine: locust)."""
        outcome = self.outcome(drained, interrupted)
        if self.live is not None:
            self.live.finish(outcome)
        results = build_results(outcome, self.slo, run_id=self.run_id)
        self.bounds = {  # the generator's own delay at each latency verdict's percentile
            v.target: verdict_bound(v, outcome.histograms, latency)
            for v in results.verdicts
            if (latency := BOUNDED.get(v.target)) is not None
        }
        # the recovery verdict is the native one: every loss's record from the shared
        # client (loss -> every room resumed), one that never came back counting slowest
        verdicts = list(results.verdicts)
        if not outcome.recoveries:
            verdicts = [no_drop_detail(v) for v in verdicts]
        replace = msgspec.structs.replace
        generator = replace(
            results.generator,
            processes=max(1, len(self.nodes)),
            notes=[*results.generator.notes, *self.process_notes()],
        )
        return replace(
            results,
            run=replace(results.run, engine="locust"),
            environment=replace(results.environment, clock=CLOCK_NOTE),
            generator=generator,
            totals=replace(results.totals, reconnects=outcome.counters["reconnects"]),
            verdicts=verdicts,
            exit_code=exit_code(outcome, verdicts),
        )

    def process_notes(self) -> list[str]:
        """One line per Locust process: what it held and received (is one starving?)."""
        notes = []
        for node_id, view in self.nodes.items():
            if view.final is None:
                notes.append(f"Locust process {node_id}: sent no final figures (lost or stopped)")
                continue
            c, cpu = view.final.counters, view.final.cpu_samples
            mean = f"{sum(cpu) / len(cpu):.0f} %" if cpu else "-"
            notes.append(
                f"Locust process {node_id}: {bitmap_count(view.ready):,} connections ready, "
                f"{c.get('sent', 0):,} sent, {c.get('delivered', 0):,} delivered, CPU mean {mean}"
            )
        return notes

    def live_view(self, snapshots: list[dict]) -> dict[str, Any]:
        """The four targets now, from the processes' latest snapshots (the SLO tab)."""
        counters: dict[str, int] = {}
        names = ("delivery", "reconnect", *DELAY_HISTOGRAMS)
        histograms = {name: LatencyHistogram() for name in names}
        open_now = missing = 0
        cpu_max = 0.0
        for snap in snapshots:
            if snap.get("tag") != self.tag:
                continue
            for name, value in snap["counters"].items():
                counters[name] = counters.get(name, 0) + value
            open_now += snap["open_now"]
            missing += snap["missing"]
            cpu_max = max(cpu_max, snap.get("cpu_max", 0.0))
            for name in names:
                if snap.get(name):
                    histograms[name].merge(LatencyHistogram.decode(snap[name]))
        return {
            "counters": counters,
            "open_now": open_now,
            "missing": missing,
            "delivery": histograms["delivery"],
            "reconnect": histograms["reconnect"],
            # the generator's own delay so far (what ``loadtest.judge.bounded_by`` reads)
            "histograms": histograms,
            "cause": delay_cause_of([cpu_max], self.scenario.max_cpu_percent),
        }


def no_drop_detail(verdict: slo_mod.Verdict) -> slo_mod.Verdict:
    """The recovery target, when no connection dropped: say so in the Locust users' terms."""
    if verdict.target is not slo_mod.Target.RECOVERY or verdict.status is not NOT_MEASURED:
        return verdict
    detail = "no connection dropped during the run (every reconnect is timed when one does)"
    return msgspec.structs.replace(verdict, detail=detail)


NOT_MEASURED = slo_mod.Status.NOT_MEASURED


class Conductor:
    """The realtime run control of the Locust master (or of a single-process run)."""

    def __init__(
        self, environment: Any, slo: slo_mod.SLO, default_spawn_rate: float | None = None
    ) -> None:
        self.env = environment
        self.default_spawn_rate = default_spawn_rate  # what we put in -r's place (None: given)
        self.slo = slo  # the SLO file's targets, read (and checked) at start
        self.run: MasterRun | None = None
        self.error: str | None = None
        self.stale = True  # the next test needs a new run (set again when a test stops)
        options = environment.parsed_options
        self.export = ExportSettings(  # what --metrics-listen/--remote-write/--otlp asked
            metrics_listen=getattr(options, "metrics_listen", None) or None,
            remote_write=getattr(options, "remote_write", None) or None,
            otlp=getattr(options, "otlp", None) or None,
            native_histograms=bool(getattr(options, "native_histograms", False)),
        )

    def send(self, kind: str, data: dict, client_id: str | None = None) -> None:
        """To one worker (``client_id``) or to all; a single process hands it over directly."""
        self.env.runner.send_message(kind, data, client_id)

    def prepare(self) -> MasterRun | None:
        """A new run from the options as they are now (the web UI may have changed them)."""
        from loadtest.adapters import AdapterError
        from loadtest.scenarios import ScenarioError

        self.stale = False
        options = self.env.parsed_options
        users = getattr(options, "num_users", None)  # the scenario's unless -u or the form said
        procs = max(1, int(getattr(options, "processes", None) or 1))
        try:
            scenario = resolve(options, users=users, procs=procs)
            rate = getattr(options, "spawn_rate", None)
            if (
                rate
                and rate != self.default_spawn_rate
                and getattr(options, "ramp", None) in (None, "")
            ):
                # Locust's -r (or the form's ramp-up field) was set: it paces the ramp
                scenario = scenario.with_overrides(ramp=scenario.connections / rate).resolved()
            self.run = MasterRun(self, scenario, self.slo)
        except (ScenarioError, AdapterError, ValueError) as exc:
            self.error = str(exc)
            log.error("rtbench: %s", exc)
            self.run = None
            return None
        self.error = None
        return self.run

    def current(self, tag: str | None) -> MasterRun | None:
        run = self.run
        return run if run is not None and (tag is None or run.tag == tag) else None

    # -- handlers of the nodes' messages (registered per runner) -----------------------------

    def on_message(self, environment: Any, msg: Any) -> None:
        data, node_id = msg.data, msg.node_id
        kind = msg.type
        if kind == messages.CLAIM:
            run = self.run  # the load shape prepared it before any user was spawned
            if run is not None:
                wanted = data["n"] if run.phase == "connecting" else 0  # late users: none
                grant = run.on_claim(node_id, data["role"], wanted)
                grant["asked"] = data["n"]
                self.send(messages.GRANT, grant, node_id)
            return
        run = self.current(data.get("tag"))
        if run is None:
            return
        if kind == messages.READY:
            run.on_ready(node_id, data["ready"], data["failed"])
        elif kind == messages.TICK:
            run.on_tick(node_id, messages.decode_tick(data["tick"]))
        elif kind == messages.DONE:
            run.on_counts(node_id, run.node(node_id).counters, done=True)
        elif kind == messages.COUNTS:
            run.on_counts(node_id, data["counters"])
        elif kind == messages.FINAL:
            run.on_final(node_id, messages.decode_final(data["final"]))

    def on_worker_report(self, client_id: str, data: dict) -> None:
        snapshot = data.get(messages.REPORT_KEY)
        run = self.current(snapshot.get("tag") if snapshot else None)
        if run is not None and snapshot is not None:
            run.node(client_id).report = snapshot

    # -- the end of a test ---------------------------------------------------------------------

    def finish(self) -> Results | None:
        """Called as the test stops: judge what there is (an early stop is 'interrupted')."""
        self.stale = True
        run = self.run
        if run is None:
            return None
        run.interrupt()
        return run.results

    def write(self, results: Results) -> Path | None:
        out = getattr(self.env.parsed_options, "out", None)
        if not out:
            return None
        return write_results(results, Path(out) / "results.json")
