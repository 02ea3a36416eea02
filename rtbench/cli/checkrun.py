"""The run behind ``rtbench check``: the load, the monitor's probes beside it, four verdicts.

``rtbench.cli.check`` resolves the flags into a chat ``Scenario`` with one fault; this
module runs it through ``loadtest.run.entry.run_scenario`` with the monitor's prober
(``monitor.prober.probe_every``, the same loop and probe ``rtbench monitor`` runs) as
the run's observer, then judges all four targets with ``rtbench.slo``:

- delivery latency: over every expected delivery, lost ones slowest (``loadtest.judge``);
- connections: held from the go through the fault to the end of the load, each one
  checked by heartbeats all along (the clients' liveness pings), never a peak;
- recovery: over every client that lost its connection (``loadtest.faults.analysis``);
- uptime: the share of good probe intervals over the run, with the budget in words
  (``rtbench.slo.judge_uptime_run``).

A target the run could not measure fails (``rtbench.slo.required``) with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from rtbench import slo as slo_mod
from rtbench.cli import UserError
from rtbench.exitcodes import ExitCode
from rtbench.results import Phase, ProbeSample, Results

if TYPE_CHECKING:
    from loadtest.export import ExportSettings
    from loadtest.faults.runner import FaultSession
    from loadtest.run.outcome import Outcome
    from loadtest.scenarios import Scenario
    from monitor.store import ProbeResult

PROBE_ROOM = "rtbench-check-probe"
MAX_PROBES = 100_000
"""Bound on the probes one check keeps (a day of 1 s probes); past it, the oldest go."""


class UptimeProber:
    """The monitor's uptime probe of the target, on its clock, beside the load."""

    def __init__(self, scenario: Scenario, interval_s: float) -> None:
        from loadtest.adapters import make_adapter
        from monitor.config import TargetConfig
        from monitor.evaluate import uptime_kind
        from monitor.prober import OwnDelay
        from monitor.probes import TargetProbes

        assert scenario.target is not None
        self.interval_s = interval_s
        self.config = TargetConfig(
            url=scenario.target,
            name="check",
            protocol=scenario.protocol,
            protocol_options=scenario.protocol_options,
            room=PROBE_ROOM,
            jwt_secret=scenario.jwt_secret,
            held_connection=False,
            health_url="",
            metrics_url="",
        )
        self.kind = uptime_kind(self.config)
        adapter = make_adapter(scenario.protocol, scenario.protocol_options)
        self.probes = TargetProbes(self.config, adapter, None)
        self.results: list[ProbeResult] = []
        self.own = OwnDelay()  # this process's own delay: never charged to the target

    async def run(self, session: FaultSession | None = None) -> None:
        """Probe until cancelled (``run_scenario`` cancels its observer when the load ends)."""
        import asyncio

        from monitor.prober import probe_every

        meter = asyncio.get_running_loop().create_task(self.own.run())
        try:
            await probe_every(
                "check",
                self.kind,
                getattr(self.probes, self.kind),
                self.interval_s,
                self.interval_s,
                self._record,
                self.own,
            )
        finally:
            meter.cancel()

    async def _record(self, result: ProbeResult) -> None:
        if len(self.results) >= MAX_PROBES:
            del self.results[0]
        self.results.append(result)


def execute_check(
    scenario: Scenario,
    *,
    slo: slo_mod.SLO,
    probe_interval: float,
    out: Path | None,
    junit: Path | None = None,
    summary_md: Path | None = None,
    quiet: bool = False,
    export: ExportSettings | None = None,
) -> int:
    """Run the check, print the verdicts first, write the outputs; return the exit code.

    ``export`` streams the live figures to Prometheus or OTLP while it runs
    (``rtbench.cli.export_options``), labelled with the run id results.json carries."""
    from loadtest.adapters import AdapterError
    from loadtest.console import ProgressView, print_summary
    from loadtest.engine.coordinator import EngineError
    from loadtest.export import ExportSettings, RunLabels, new_run_id
    from loadtest.faults.report import print_faults
    from loadtest.faults.runner import FaultRunError
    from loadtest.judge import build_results
    from loadtest.run.entry import run_scenario
    from loadtest.scenarios import ScenarioError
    from rtbench.cli.export_options import exporting
    from rtbench.cli.run import _print_paths, _run_loop, make_console, unreachable_line, write_all

    console = make_console()
    prober = UptimeProber(scenario, probe_interval)
    console.print(_plan_line(scenario, probe_interval, slo), highlight=False)
    run_id = new_run_id()
    assert scenario.target is not None  # check_command refuses a scenario without one
    labels = RunLabels(run_id, "check", scenario.target, scenario.protocol)
    view = ProgressView(console, enabled=not quiet)
    try:
        with exporting(export or ExportSettings(), labels, slo, console) as exporters, view:
            outcome = _run_loop(
                run_scenario(
                    scenario,
                    on_progress=view,
                    ontime_ms=slo.delivery_latency.threshold_ms,
                    log_dir=out,
                    observe=prober.run,
                    exporters=exporters,
                )
            )
    except (ScenarioError, AdapterError, FaultRunError) as exc:
        raise UserError(str(exc)) from None
    except EngineError as exc:
        raise UserError(f"load generator failed: {exc}", code=ExitCode.INCONCLUSIVE) from None
    except KeyboardInterrupt:
        raise UserError("interrupted", code=130) from None
    results = check_results(build_results(outcome, slo, run_id=run_id), outcome, prober, slo)
    if results.exit_code == ExitCode.UNREACHABLE:
        _print_paths(console, write_all(results, out, junit, summary_md))
        raise UserError(unreachable_line(results), code=ExitCode.UNREACHABLE)
    print_summary(console, results, verdicts_first=True)
    print_faults(console, results)
    _print_paths(console, write_all(results, out, junit, summary_md))
    console.print(answer_line(results), highlight=False, soft_wrap=True)
    return results.exit_code


def answer_line(results: Results) -> str:
    """The check's answer in one line, last: which promises held, which did not and why."""
    names = {
        slo_mod.Target.UPTIME: "uptime",
        slo_mod.Target.DELIVERY_LATENCY: "delivery",
        slo_mod.Target.CONNECTIONS: "connections",
        slo_mod.Target.RECOVERY: "recovery",
    }

    def figure(v: slo_mod.Verdict) -> str:
        if v.measured is None:
            return "not measured"
        digits = 0 if v.unit == "connections" else 2
        return f"{v.measured:,.{digits}f} {v.unit}".strip()

    kept = [v for v in results.verdicts if v.status is slo_mod.Status.PASS]
    failed = [v for v in results.verdicts if v.failed and v.trusted]
    unsure = [v for v in results.verdicts if v.failed and not v.trusted]
    parts = [f"{len(kept)} of {len(results.verdicts)} promises kept"]
    if failed:
        parts.append(
            "failed: "
            + ", ".join(f"{names[v.target]} ({figure(v)}; {v.objective})" for v in failed)
        )
    if unsure:
        parts.append(
            "inconclusive: " + ", ".join(f"{names[v.target]} ({figure(v)})" for v in unsure)
        )
    if not failed and not unsure:
        parts.append(", ".join(f"{names[v.target]} {figure(v)}" for v in kept))
    return f"rtbench check: {'; '.join(parts)} (exit {results.exit_code})"


def _plan_line(scenario: Scenario, probe_interval: float, slo: slo_mod.SLO) -> str:
    return (
        f"check: hold {scenario.users:,} connections ({scenario.procs} generator "
        f"process{'es' * (scenario.procs > 1)}), chat in rooms of {scenario.room_size} at "
        f"{scenario.rate:g} msg/s each for {scenario.duration:g} s, fault "
        f"{', '.join(scenario.faults)}, an uptime probe every {probe_interval:g} s; "
        f"judged against {slo.connections.min:,} connections, "
        f"p{slo.delivery_latency.percentile:g} delivery < {slo.delivery_latency.threshold_ms:g} "
        f"ms, p{slo.recovery.percentile:g} recovery < {slo.recovery.threshold_ms:g} ms, "
        f"uptime > {slo.uptime.objective:g} %"
    )


def check_results(
    results: Results, outcome: Outcome, prober: UptimeProber, slo: slo_mod.SLO
) -> Results:
    """A run's results as a check's: the four verdicts, probes and phases on one axis."""
    t0_wall = outcome.started_wall
    probes = [
        ProbeSample(
            t=round(r.ts - t0_wall, 3),
            ok=r.ok,
            latency_ms=None if r.latency_ms is None else round(r.latency_ms, 3),
            error=r.error,
            own_ms=r.own_ms,
            counted=r.counted,
        )
        for r in prober.results
    ]
    phases = phases_of(outcome, results)
    verdicts = check_verdicts(results, outcome, probes, prober.interval_s, slo)
    run = msgspec.structs.replace(results.run, mode="check")
    results = msgspec.structs.replace(
        results, run=run, probes=probes, phases=phases, verdicts=verdicts
    )
    code = ExitCode.UNREACHABLE if outcome.ready == 0 else slo_mod.exit_code_for(verdicts)
    return msgspec.structs.replace(results, exit_code=code)


def check_verdicts(
    results: Results,
    outcome: Outcome,
    probes: list[ProbeSample],
    interval_s: float,
    slo: slo_mod.SLO,
) -> list[slo_mod.Verdict]:
    """The four verdicts of a check, each measured or failed with the reason."""
    by_target = {v.target: v for v in results.verdicts}
    observed_s = (probes[-1].t - probes[0].t + interval_s) if probes else 0.0
    counted = [p for p in probes if p.counted]  # not: the prober's own stop explains it
    good = sum(1 for p in counted if p.ok)
    uptime = slo_mod.judge_uptime_run(slo, good, len(counted), interval_s, observed_s)
    if len(counted) < len(probes):
        uptime = msgspec.structs.replace(
            uptime,
            detail=f"{uptime.detail}; {len(probes) - len(counted)} failed probes not counted: "
            "the prober's own process was stopped for longer than their timeout",
        )
    if counted and not good:
        uptime = msgspec.structs.replace(
            uptime, detail=f"no probe got through: {counted[-1].error}; {uptime.detail}"
        )
    connections = slo_mod.judge_connections(slo, outcome.held, outcome.plan.connections)
    if connections.status is slo_mod.Status.PASS:
        connections = msgspec.structs.replace(
            connections,
            detail=(
                f"{outcome.held:,} held from the go through the fault to the end of the load "
                f"({outcome.ready:,} ready at the go), each checked by heartbeats"
            ),
        )
    fault_errors = [f.get("error") for f in results.run.faults if f.get("error")]
    no_fault = (
        f"the fault was not injected: {fault_errors[0]}"
        if fault_errors
        else "no client lost its connection, so the fault did not take effect"
    )
    if results.generator.saturated:  # the run's own verdicts are marked already
        uptime, connections = slo_mod.untrusted(
            [uptime, connections], "the load generator was saturated"
        )
    return [
        slo_mod.required(uptime, "no uptime probe ran"),
        slo_mod.required(by_target[slo_mod.Target.DELIVERY_LATENCY], "no message was measured"),
        slo_mod.required(connections, "too few connections were opened"),
        slo_mod.required(by_target[slo_mod.Target.RECOVERY], no_fault),
    ]


def phases_of(outcome: Outcome, results: Results) -> list[Phase]:
    """Ramp, load, each fault as it happened and the drain, seconds from the run's start."""
    t0 = outcome.t0_ns
    end = round(outcome.ended_wall - outcome.started_wall, 3)
    if outcome.go_ns is None:
        return [Phase(name="ramp", start=0.0, end=end)]
    go = round((outcome.go_ns - t0) / 1e9, 3)
    send_end = round(((outcome.send_end_ns or outcome.go_ns) - t0) / 1e9, 3)
    phases = [
        Phase(name="ramp", start=0.0, end=go),
        Phase(name="load", start=go, end=send_end),
    ]
    for fault in results.run.faults:
        if "started_s" in fault:
            phases.append(
                Phase(
                    name=str(fault.get("kind", "fault")),
                    start=round(go + fault["started_s"], 3),
                    end=round(go + fault["ended_s"], 3),
                )
            )
    phases.append(Phase(name="drain", start=send_end, end=max(send_end, end)))
    return phases


__all__ = ["UptimeProber", "check_results", "execute_check"]
