"""The regression gate: compare a new run with a baseline, metric by metric.

Direction matters: a latency that rises is a regression, a throughput that
rises is an improvement. A metric missing from either run is "not comparable",
never a pass, and when nothing at all can be compared the gate refuses to
answer rather than pass vacuously. Comparing runs of different scenarios,
targets or machines is allowed but warned about: the figures may differ for
reasons that have nothing to do with the change under test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rtbench.exitcodes import ExitCode
from rtbench.report.markdown import cell
from rtbench.report.metrics import DEFAULT_METRICS, METRICS, Metric
from rtbench.report.model import flatten, format_number
from rtbench.results import Results

RowVerdict = Literal["regression", "within", "improvement", "unchanged", "not_comparable"]

DEFAULT_ALLOWANCE = 10.0  # percent
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%?\s*$")
_MAX_CONFIG_DIFFS = 6


def parse_percent(text: str) -> float:
    """'10%', '10' or '2.5 %' -> percent. Raises ValueError with a line a person can act on."""
    match = _PERCENT_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a percentage (write it like 10% or 2.5%)")
    return float(match.group(1))


def parse_metrics(specs: Sequence[str], default_allowance: float) -> list[tuple[Metric, float]]:
    """``["delivery_p99=5%", "throughput"]`` (or comma-separated) -> (metric, allowance) pairs.

    No spec means the default set: delivery p50/p99, throughput, connections, recovery p99.
    """
    items = [part.strip() for spec in specs for part in spec.split(",") if part.strip()]
    if not items:
        return [(METRICS[name], default_allowance) for name in DEFAULT_METRICS]
    chosen: list[tuple[Metric, float]] = []
    for item in items:
        name, _, allowance = item.partition("=")
        metric = METRICS.get(name.strip())
        if metric is None:
            raise ValueError(f"unknown metric {name.strip()!r}; known: {', '.join(METRICS)}")
        chosen.append((metric, parse_percent(allowance) if allowance else default_allowance))
    return chosen


@dataclass(frozen=True)
class Row:
    metric: Metric
    base: float | None
    new: float | None
    allowance: float  # percent the metric may worsen before it is a regression
    verdict: RowVerdict
    note: str = ""

    @property
    def change_percent(self) -> float | None:
        """Signed change of the value itself (not of its goodness), in percent."""
        if self.base is None or self.new is None:
            return None
        if self.base == 0:
            return 0.0 if self.new == 0 else math.copysign(math.inf, self.new)
        return 100.0 * (self.new - self.base) / abs(self.base)


@dataclass(frozen=True)
class Comparison:
    base_label: str
    new_label: str
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def comparable(self) -> list[Row]:
        return [r for r in self.rows if r.verdict != "not_comparable"]

    @property
    def exit_code(self) -> int:
        """1 on a regression beyond its allowance; 2 when nothing could be compared; else 0."""
        if self.regressions:
            return ExitCode.SLO_FAILED
        if not self.comparable:
            return ExitCode.USAGE
        return ExitCode.OK


def judge_row(
    metric: Metric,
    base: float | None,
    new: float | None,
    allowance: float,
    min_delta_ms: float = 0.0,
) -> Row:
    """One metric's verdict. ``min_delta_ms``: latency changes no larger than this are noise."""
    if base is None or new is None:
        where = (
            "either run" if base is None and new is None else ("base" if base is None else "new")
        )
        return Row(metric, base, new, allowance, "not_comparable", f"not measured in {where}")
    worse = (new - base) if metric.lower_is_better else (base - new)
    if worse == 0:
        return Row(metric, base, new, allowance, "unchanged")
    if worse < 0:
        return Row(metric, base, new, allowance, "improvement")
    worse_percent = math.inf if base == 0 else 100.0 * worse / abs(base)
    if metric.unit == "ms" and worse <= min_delta_ms:
        note = f"change within the {min_delta_ms:g} ms noise floor"
        return Row(metric, base, new, allowance, "within", note)
    if worse_percent > allowance:
        return Row(metric, base, new, allowance, "regression")
    return Row(metric, base, new, allowance, "within")


def context_warnings(base: Results, new: Results) -> list[str]:
    """Reasons the two runs' figures may differ for something other than the change tested."""
    warnings = []
    for name in ("scenario", "target", "protocol", "engine"):
        a, b = getattr(base.run, name), getattr(new.run, name)
        if a != b:
            warnings.append(
                f"the runs have different {name}s (base {a!r}, new {b!r}): "
                "their figures may not measure the same thing"
            )
    base_config, new_config = dict(flatten(base.run.config)), dict(flatten(new.run.config))
    differing = [
        f"{key} {base_config.get(key, '(unset)')} → {new_config.get(key, '(unset)')}"
        for key in sorted(base_config.keys() | new_config.keys())
        if base_config.get(key) != new_config.get(key)
    ]
    if differing:
        shown = "; ".join(differing[:_MAX_CONFIG_DIFFS])
        more = (
            f" and {len(differing) - _MAX_CONFIG_DIFFS} more"
            if len(differing) > _MAX_CONFIG_DIFFS
            else ""
        )
        warnings.append(f"the runs' configurations differ: {shown}{more}")
    if base.environment.cpu_count != new.environment.cpu_count:
        warnings.append(
            f"the runs were on machines with different CPU counts "
            f"(base {base.environment.cpu_count}, new {new.environment.cpu_count})"
        )
    for label, results in (("base", base), ("new", new)):
        if results.generator.saturated:
            warnings.append(
                f"the {label} run's load generator was saturated: "
                "its figures may be the generator's own"
            )
    return warnings


def _label(results: Results, path: str) -> str:
    return f"{path} ({results.run.scenario} → {results.run.target}, {results.run.started_at})"


def compare(
    base: Results,
    new: Results,
    metrics: Sequence[tuple[Metric, float]],
    *,
    min_delta_ms: float = 0.0,
    base_name: str = "base",
    new_name: str = "new",
) -> Comparison:
    rows = [
        judge_row(metric, metric.read(base), metric.read(new), allowance, min_delta_ms)
        for metric, allowance in metrics
    ]
    return Comparison(
        base_label=_label(base, base_name),
        new_label=_label(new, new_name),
        rows=rows,
        warnings=context_warnings(base, new),
    )


# -- rendering ------------------------------------------------------------------------


def _change(row: Row) -> str:
    change = row.change_percent
    if change is None:
        return "—"
    if math.isinf(change):
        return "+∞ %" if change > 0 else "-∞ %"
    return f"{change:+.1f} %"


def _verdict_text(row: Row) -> str:
    text = {
        "regression": "REGRESSION",
        "within": "ok (within allowance)",
        "improvement": "improved",
        "unchanged": "unchanged",
        "not_comparable": "not comparable",
    }[row.verdict]
    if not row.note:
        return text
    return f"ok ({row.note})" if row.verdict == "within" else f"{text}: {row.note}"


def _cells(row: Row) -> list[str]:
    unit = f" ({row.metric.unit})" if row.metric.unit not in row.metric.label else ""
    return [
        row.metric.label + unit,
        "lower" if row.metric.lower_is_better else "higher",
        format_number(row.base, row.metric.unit),
        format_number(row.new, row.metric.unit),
        _change(row),
        f"{row.allowance:g} %",
        _verdict_text(row),
    ]


HEADER = ["metric", "better", "base", "new", "change", "allowance", "verdict"]
_RIGHT_ALIGNED = {2, 3, 4, 5}


def _conclusion(comparison: Comparison) -> str:
    regressions = comparison.regressions
    if regressions:
        names = ", ".join(r.metric.label for r in regressions)
        return f"{len(regressions)} regression(s) beyond the allowance: {names}"
    if not comparison.comparable:
        return "nothing could be compared: no metric was measured in both runs"
    missing = len(comparison.rows) - len(comparison.comparable)
    tail = f"; {missing} not comparable" if missing else ""
    return f"no regression beyond the allowance in {len(comparison.comparable)} metric(s){tail}"


def render_text(comparison: Comparison) -> str:
    """A plain aligned table: readable in a terminal and in a CI log alike."""
    table = [HEADER, *(_cells(r) for r in comparison.rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = [f"base: {comparison.base_label}", f"new:  {comparison.new_label}", ""]
    for n, line in enumerate(table):
        cells = [
            cell.rjust(widths[i]) if i in _RIGHT_ALIGNED else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", _conclusion(comparison)]
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison) -> str:
    icon = "❌" if comparison.regressions else ("⚠️" if not comparison.comparable else "✅")
    lines = [
        f"### {icon} rtbench compare: {_conclusion(comparison)}",
        "",
        f"base: `{cell(comparison.base_label)}`  ",
        f"new: `{cell(comparison.new_label)}`",
        "",
    ]
    lines += [f"> ⚠️ {cell(w)}" for w in comparison.warnings]
    if comparison.warnings:
        lines.append("")
    lines += [
        "| " + " | ".join(HEADER) + " |",
        "|---|---|---:|---:|---:|---:|---|",
        *("| " + " | ".join(cell(c) for c in _cells(r)) + " |" for r in comparison.rows),
        "",
    ]
    return "\n".join(lines)
