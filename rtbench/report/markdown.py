"""A compact Markdown summary for ``$GITHUB_STEP_SUMMARY`` and pull-request comments."""

from __future__ import annotations

from rtbench.report.metrics import connections_held, deliveries_per_second, latency_ms
from rtbench.report.model import accounting, format_ms, format_value, run_outcome, view_verdict
from rtbench.results import Results

ICONS = {
    "pass": "✅",
    "fail": "❌",
    "not_measured": "⚪",
    "untrustworthy": "⚠️",
    "inconclusive": "⚠️",
    "unreachable": "❌",
}


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Results) -> str:
    outcome = run_outcome(results)
    run = results.run
    lines = [
        f"### {ICONS.get(outcome.state, '')} rtbench `{cell(run.scenario)}` → "
        f"`{cell(run.target)}`: {outcome.headline}",
        "",
    ]
    if results.generator.saturated:
        lines += [
            "> ⚠️ The load generator was saturated: failing verdicts are untrustworthy "
            "(exit code 4), not blamed on the server.",
            "",
        ]
    if results.verdicts:
        lines += ["| target | objective | measured | verdict |", "|---|---|---:|---|"]
        for v in map(view_verdict, results.verdicts):
            lines.append(
                f"| {v.name} | {cell(v.objective)} | {v.measured} | {ICONS[v.state]} {v.label} |"
            )
        lines.append("")
    holds, identity = accounting(results)
    totals = results.totals
    delivery = " · ".join(
        f"{label} {format_ms(latency_ms(results, 'delivery', key))}"
        for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))
    )
    lines += [
        f"**Delivery latency** {delivery}  ",
        f"**Throughput** {format_value(deliveries_per_second(results), 'deliveries/s')} · "
        f"**connections held** {format_value(connections_held(results), '')} · "
        f"**duration** {run.duration_s:.1f} s  ",
        f"**Accounting** {identity} {'✓' if holds else '❌ does not add up'}"
        f" · {totals.duplicated:,} duplicated · {totals.out_of_order:,} out of order",
        "",
    ]
    return "\n".join(lines)
