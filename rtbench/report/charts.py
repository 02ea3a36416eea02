"""The report's charts, built from a run's per-second ``series`` and encoded histograms.

Each chart comes with a caption that says how to read it, and with the reason
when it is empty (a connect-only run has no latency to plot): an empty chart
says why rather than disappearing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rtbench.report.model import format_ms
from rtbench.report.svg import (
    PALETTE,
    Band,
    Lane,
    LinearScale,
    PercentileScale,
    Point,
    Rule,
    Series,
    Tick,
    auto_scale,
    line_chart,
    percentile_position,
    timeline_chart,
)
from rtbench.results import Results, SecondSample

MAX_POINTS = 900  # per series: keeps a day-long soak's report to a few hundred KB
LOG_SPAN = 50.0  # latency axes turn logarithmic when max / min exceeds this


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    caption: str
    svg: str | None  # None: nothing to draw, and ``empty`` says why
    empty: str = ""
    wide: bool = True


Aggregate = Callable[[Sequence[float]], float]


def _worst(values: Sequence[float]) -> float:
    return max(values)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class _Timeline:
    """Per-second samples, folded into buckets of ``step`` seconds when there are too many."""

    samples: list[SecondSample]
    step: int
    minutes: bool

    @classmethod
    def of(cls, samples: list[SecondSample]) -> _Timeline:
        step = max(1, math.ceil(len(samples) / MAX_POINTS))
        span = samples[-1].t - samples[0].t if samples else 0.0
        return cls(samples, step, span > 900)

    @property
    def x_label(self) -> str:
        return "minutes since start" if self.minutes else "seconds since start"

    @property
    def note(self) -> str:
        if self.step == 1:
            return ""
        return (
            f" Each point covers {self.step} s: the worst second for latency, CPU and lag, "
            "the mean for rates and counts."
        )

    def points(self, field: str, how: Aggregate) -> list[Point]:
        out: list[Point] = []
        divisor = 60.0 if self.minutes else 1.0
        for start in range(0, len(self.samples), self.step):
            bucket = self.samples[start : start + self.step]
            values = [v for s in bucket if (v := getattr(s, field)) is not None]
            out.append((bucket[0].t / divisor, how(values) if values else None))
        return out

    def x_scale(self) -> LinearScale:
        divisor = 60.0 if self.minutes else 1.0
        first = self.samples[0].t / divisor if self.samples else 0.0
        last = self.samples[-1].t / divisor if self.samples else 1.0
        return LinearScale(min(0.0, first), max(last, first + 1.0))  # one sample: 1 unit wide


def _ys(series: Sequence[Series]) -> list[float]:
    return [y for s in series for _, y in s.points if y is not None]


def _slo(results: Results, section: str, key: str) -> Any:
    value = results.run.slo.get(section, {})
    return value.get(key) if isinstance(value, dict) else None


def _timeline_chart(
    timeline: _Timeline,
    *,
    id: str,
    title: str,
    caption: str,
    fields: Sequence[tuple[str, str, Aggregate]],
    y_label: str,
    rules: Sequence[Rule] = (),
    log_span: float = 0,
    rule_reach: float | None = None,
    wide: bool = True,
) -> Chart:
    series = [
        Series(name, timeline.points(field, how), PALETTE[i % len(PALETTE)])
        for i, (field, name, how) in enumerate(fields)
    ]
    values = _ys(series)
    if not values:
        what = ", ".join(name for _, name, _ in fields)
        return Chart(id, title, caption, None, f"The run recorded no per-second {what}.", wide)
    # A rule far above the data would flatten it on a linear axis (10,000 connections over
    # a 50-connection run): ``rule_reach`` drops rules beyond that many times the data's top.
    shown = [r for r in rules if rule_reach is None or r.value <= rule_reach * max(values)]
    scale_values = values + [r.value for r in shown]
    y_scale = auto_scale(scale_values, log_span=log_span)
    if not isinstance(y_scale, LinearScale):
        y_label += " (log scale)"
    svg = line_chart(
        title=title,
        series=series,
        x_scale=timeline.x_scale(),
        y_scale=y_scale,
        x_label=timeline.x_label,
        y_label=y_label,
        rules=shown,
        width=760 if wide else 372,
        height=280 if wide else 240,
    )
    return Chart(id, title, caption + timeline.note, svg, wide=wide)


def latency_over_time(results: Results, timeline: _Timeline) -> Chart:
    threshold = _slo(results, "delivery_latency", "threshold_ms")
    percentile = _slo(results, "delivery_latency", "percentile")
    rules = (
        [Rule(float(threshold), f"SLO: p{percentile:g} < {threshold:g} ms")] if threshold else []
    )
    return _timeline_chart(
        timeline,
        id="latency-over-time",
        title="Delivery latency over time",
        caption=(
            "p50, p99 and max of the deliveries received in each second, from the scheduled "
            "send time, and the generator's own delay (the worst its timer woke late in that "
            "second: a delivery arriving then waited as long for the generator). A p99 line "
            "that climbs while the load is steady and the generator's delay stays low is a "
            "server falling behind; a p99 that follows the generator's delay is the "
            "generator's own, and the verdicts say so (inconclusive)."
        ),
        fields=[
            ("delivery_p50", "p50", _worst),
            ("delivery_p99", "p99", _worst),
            ("delivery_max", "max", _worst),
            ("loop_lag_ms", "generator delay", _worst),
        ],
        y_label="latency (ms)",
        rules=rules,
        log_span=LOG_SPAN,
    )


def _curve(results: Results, kind: str) -> tuple[list[Point], list[str]] | None:
    summary = results.latency.get(kind)
    histogram = summary.histogram() if summary else None
    if histogram is None or histogram.count == 0:
        return None
    # The worst value is the 1/N-th: place it at that percentile, not at 100 % (infinity).
    limit = math.log10(histogram.count) if histogram.count > 1 else 1.0
    points: list[Point] = []
    tips: list[str] = []
    for percentile, value in histogram.percentile_curve():
        position = min(percentile_position(percentile), limit)
        if points and position <= points[-1][0] and percentile < 100:
            continue
        label = "max" if percentile >= 100 else f"p{_percentile_text(percentile, position)}"
        points.append((position, value))
        tips.append(f"{kind} {label}: {format_ms(value)}")
    return points, tips


def _percentile_text(percentile: float, position: float) -> str:
    """27.1, 99.95, 99.9981: one more decimal per nine, trailing zeros trimmed."""
    text = f"{percentile:.{min(8, math.ceil(position) + 1)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def percentile_plot(results: Results) -> Chart:
    title = "Latency by percentile (HDR)"
    caption = (
        "Each curve is a full latency distribution from the run's HDR histogram: read a "
        "latency off the y axis at any percentile. Every decade of the x axis is one more "
        '"nine" (90 %, 99 %, 99.9 % …), so the tail gets as much room as the median. '
        "A curve that bends up sharply shows a tail of slow outliers; a flat one, consistent "
        "service. Dashed red lines: the SLO's percentile and thresholds."
    )
    series: list[Series] = []
    for i, kind in enumerate(results.latency):
        curve = _curve(results, kind)
        if curve is not None:
            series.append(Series(kind, curve[0], PALETTE[i % len(PALETTE)], tips=curve[1]))
    if not series:
        return Chart("percentiles", title, caption, None, "The run recorded no latency histogram.")
    rules: list[Rule] = []
    names = {s.name for s in series}
    for kind, section in (("delivery", "delivery_latency"), ("recovery", "recovery")):
        threshold = _slo(results, section, "threshold_ms")
        percentile = _slo(results, section, "percentile")
        if kind in names and threshold:
            rules.append(Rule(float(threshold), f"{kind} SLO {threshold:g} ms"))
            rules.append(Rule(percentile_position(float(percentile)), f"p{percentile:g}", "x"))
    values = _ys(series)
    y_scale = auto_scale(values + [r.value for r in rules if r.axis == "y"], log_span=LOG_SPAN)
    y_label = "latency (ms)" + ("" if isinstance(y_scale, LinearScale) else " (log scale)")
    x_hi = max(x for s in series for x, _ in s.points)
    svg = line_chart(
        title=title,
        series=series,
        x_scale=PercentileScale(0.0, x_hi),
        y_scale=y_scale,
        x_label="percentile (log scale of 1 / (1 - p))",
        y_label=y_label,
        rules=rules,
    )
    return Chart("percentiles", title, caption, svg)


def connections_over_time(results: Results, timeline: _Timeline) -> Chart:
    target = _slo(results, "connections", "min")
    rules = [Rule(float(target), f"SLO: ≥ {target:,} held")] if target else []
    return _timeline_chart(
        timeline,
        id="connections",
        title="Open connections",
        caption=(
            "Connections open at the end of each second. The ramp shows how fast the server "
            "accepts; a drop during the steady phase is connections lost (see errors and "
            "reconnects below)."
        ),
        fields=[("connections", "open", _worst)],
        y_label="connections",
        rules=rules,
        rule_reach=3.0,
    )


def throughput_over_time(results: Results, timeline: _Timeline) -> Chart:
    return _timeline_chart(
        timeline,
        id="throughput",
        title="Sends and deliveries per second",
        caption=(
            "Messages sent, acked by the server, and delivered to recipients each second. "
            "With fan-out, deliveries are sends times recipients; a gap between sent and acked, "
            "or deliveries falling while sends hold, is the server falling behind."
        ),
        fields=[
            ("sent", "sent", _mean),
            ("acked", "acked", _mean),
            ("delivered", "delivered", _mean),
        ],
        y_label="per second",
    )


def errors_over_time(results: Results, timeline: _Timeline) -> Chart:
    return _timeline_chart(
        timeline,
        id="errors",
        title="Errors and reconnects per second",
        caption=(
            "Error frames and failed operations, and reconnects, each second. Reconnects "
            "during a fault-injection run are expected; anywhere else they are lost connections."
        ),
        fields=[("errors", "errors", _mean), ("reconnects", "reconnects", _mean)],
        y_label="per second",
    )


def saturation_thresholds(results: Results) -> tuple[float | None, float | None]:
    """(CPU %, loop lag ms) the run judged saturation by: recorded with the generator's
    health, or else the scenario's ``max_cpu_percent`` / ``max_loop_lag_ms``."""
    health, config = results.generator, results.run.config

    def pick(recorded: float | None, key: str) -> float | None:
        if recorded is not None:
            return recorded
        value = config.get(key)
        return float(value) if isinstance(value, int | float) else None

    return (
        pick(health.cpu_saturation_percent, "max_cpu_percent"),
        pick(health.loop_lag_saturation_ms, "max_loop_lag_ms"),
    )


def generator_charts(results: Results, timeline: _Timeline) -> list[Chart]:
    cpu_limit, lag_limit = saturation_thresholds(results)
    processes = max(results.generator.processes, 1)
    cpu_rules = []
    if cpu_limit is not None:
        # The series sums CPU over processes; saturation is judged per process.
        label = "saturation" if processes == 1 else f"saturation ({cpu_limit:g} % x {processes})"
        cpu_rules.append(Rule(cpu_limit * processes, label))
    lag_rules = [Rule(lag_limit, "saturation")] if lag_limit is not None else []
    unmarked = " The results do not record the saturation threshold, so none is marked."
    cpu = _timeline_chart(
        timeline,
        id="generator-cpu",
        title="Load generator CPU",
        caption=(
            "CPU of the load generator, in % of one core summed over its processes. Near the "
            "red line the generator, not the server, sets the latency."
            + ("" if cpu_rules else unmarked)
        ),
        fields=[("generator_cpu", "CPU", _worst)],
        y_label="% of one core",
        rules=cpu_rules,
        wide=False,
    )
    lag = _timeline_chart(
        timeline,
        id="generator-lag",
        title="Load generator event-loop lag",
        caption=(
            "The worst lag of the generator's event loop in each second: every millisecond "
            "here is added to the latency it measures." + ("" if lag_rules else unmarked)
        ),
        fields=[("loop_lag_ms", "loop lag", _worst)],
        y_label="lag (ms)",
        rules=lag_rules,
        wide=False,
    )
    busy = _timeline_chart(
        timeline,
        id="generator-cpus",
        title="The generator's CPUs, busy with everything",
        caption=(
            "How busy the CPUs the generator may run on were in each second, with all their "
            "work: its own processes and whatever else ran there (the server, when it shares "
            "them). Near the red line the two take CPU from each other, and a late delivery "
            "is no longer the server's alone: pin them to separate cores (taskset)."
            + ("" if cpu_limit is not None else unmarked)
        ),
        fields=[("generator_cpus_busy", "busy", _worst)],
        y_label="% busy",
        rules=[Rule(cpu_limit, "saturation")] if cpu_limit is not None else [],
    )
    return [cpu, lag, busy]


def storm_chart(results: Results) -> Chart | None:
    """Reconnects per second over each fault's storm (None: no fault recorded a storm).

    Drawn from ``run.faults[].storm.reconnects_per_100ms`` (loadtest/faults/analysis.py):
    the clients' welcomes per 100 ms from the fault's start, scaled to per second.
    """
    series: list[Series] = []
    for i, fault in enumerate(results.run.faults):
        storm = fault.get("storm")
        counts = storm.get("reconnects_per_100ms") if isinstance(storm, dict) else None
        if not counts:
            continue
        points: list[Point] = [(k / 10, float(n) * 10) for k, n in enumerate(counts)]
        name = str(fault.get("spec") or fault.get("kind") or f"fault {i + 1}")
        series.append(Series(name, points, PALETTE[i % len(PALETTE)]))
    if not series:
        return None
    ends = [x for s in series for x, _ in s.points]
    svg = line_chart(
        title="Reconnect storm",
        series=series,
        x_scale=LinearScale(0.0, max(ends) + 0.1),
        y_scale=auto_scale(_ys(series)),
        x_label="seconds since the fault started (a blackhole: since it lifted)",
        y_label="reconnects per second",
    )
    caption = (
        "Clients the server took back (welcomed again) per 100 ms, scaled to a rate per "
        "second, from each fault's start: the height is the server's accepted-handshake "
        "rate in the storm, the width how long the storm lasted. A flat top is a server "
        "(or generator) that cannot accept faster; a drain whose batches are further apart "
        "than 100 ms shows one step per batch; a long thin tail is clients sleeping in "
        "their backoff. The fault table "
        "has the peak, the mean and the time until 99 % were back with every missed message."
    )
    return Chart("storm", "Reconnect storm: reconnects per second", caption, svg)


PHASE_COLORS = {"ramp": "#56B4E9", "load": "#0072B2", "drain": "#999999"}
FAULT_COLOR = "#D55E00"


def check_timeline(results: Results) -> Chart | None:
    """A check's story on one time axis: phases and the fault, every uptime probe,
    connections held and delivery p99 (None for a run that is not a check)."""
    if not results.phases and not results.probes:
        return None
    samples = sorted(results.series, key=lambda s: s.t)
    ends = [p.end for p in results.phases] + [p.t for p in results.probes]
    ends += [s.t for s in samples]
    x_scale = LinearScale(0.0, max(ends, default=1.0))
    phases = [
        Band(p.start, p.end, p.name, PHASE_COLORS.get(p.name, FAULT_COLOR)) for p in results.phases
    ]
    faults = [b for b in phases if b.label not in PHASE_COLORS]
    probes = [
        Tick(
            p.t,
            p.ok,
            f"{p.t:.1f} s: "
            + (f"ok, {format_ms(p.latency_ms)} ms" if p.ok else f"failed: {p.error or '?'}"),
        )
        for p in results.probes
    ]
    connections = [(s.t, float(s.connections)) for s in samples]
    p99 = [(s.t, s.delivery_p99) for s in samples]
    worst = max((y for _, y in p99 if y is not None), default=1.0)
    threshold = _slo(results, "delivery_latency", "threshold_ms")
    lanes = [
        Lane("phases", bands=[b for b in phases if b.label in PHASE_COLORS] + faults),
        Lane("uptime probes", ticks=probes),
        Lane(
            "connections",
            line=Series("connections", connections, PALETTE[2]),
            y_scale=LinearScale(0.0, max((y for _, y in connections), default=1.0)),
        ),
        Lane(
            "delivery p99 ms",
            line=Series("delivery p99", p99, PALETTE[1]),
            y_scale=LinearScale(0.0, max(worst, threshold or 0.0)),
        ),
    ]
    marks = [Rule(b.start, b.label, axis="x") for b in faults]
    bad = sum(1 for p in results.probes if not p.ok and p.counted)
    caption = (
        "One time axis for the whole check: the ramp, the load and the drain, the fault as "
        f"it really happened (red band), each uptime probe ({len(results.probes)}, "
        f"{bad} failed: tall red ticks; hover for the error), connections held and the "
        "delivery p99 of each second. A restart shows as a dip in connections, failed "
        "probes while nothing listens, and a latency spike while clients come back."
    )
    svg = timeline_chart(
        title="Check timeline",
        lanes=lanes,
        x_scale=x_scale,
        x_label="seconds since start",
        marks=marks,
    )
    return Chart(
        "check-timeline", "Timeline: phases, fault, probes, connections, latency", caption, svg
    )


def build_charts(results: Results) -> list[Chart]:
    """Every chart of the report, in reading order (a check's timeline first)."""
    timeline = _Timeline.of(sorted(results.series, key=lambda s: s.t))
    story = check_timeline(results)
    storm = storm_chart(results)
    return [
        *([story] if story is not None else []),
        latency_over_time(results, timeline),
        percentile_plot(results),
        connections_over_time(results, timeline),
        throughput_over_time(results, timeline),
        errors_over_time(results, timeline),
        *([storm] if storm is not None else []),
        *generator_charts(results, timeline),
    ]
