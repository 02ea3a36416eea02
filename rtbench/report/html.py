"""The self-contained HTML report: verdicts first, then charts, then what produced them.

The page carries a Content-Security-Policy that forbids every network load and
every script, so "opens offline" is enforced by the browser, not just intended:
anything that tried to reach out would be blocked and show as a console error,
which the Chromium test treats as a failure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jinja2
from markupsafe import Markup

from rtbench import __version__
from rtbench.report.charts import build_charts, saturation_thresholds
from rtbench.report.metrics import connections_held, deliveries_per_second, latency_ms, loss_percent
from rtbench.report.model import (
    LATENCY_NAMES,
    accounting,
    flatten,
    format_ms,
    format_value,
    run_outcome,
    view_verdict,
)
from rtbench.results import Results

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("rtbench.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["ms"] = format_ms


def _key_figures(results: Results) -> list[tuple[str, str, str]]:
    """(label, value, note) of the figures a reader looks for first."""
    t = results.totals
    figures = [
        (
            f"delivery {key.replace('p999', 'p99.9')}",
            format_ms(latency_ms(results, "delivery", key)),
            "",
        )
        for key in ("p50", "p99", "p999", "max")
    ]
    loss = loss_percent(results)
    figures += [
        ("deliveries / s", format_value(deliveries_per_second(results), ""), "unique deliveries"),
        ("connections held", format_value(connections_held(results), ""), "at once"),
        (
            "lost",
            f"{t.lost:,}",
            "of {:,} expected ({})".format(t.expected_deliveries, format_value(loss, "%"))
            if loss is not None
            else "nothing was expected",
        ),
        ("duplicated / out of order", f"{t.duplicated:,} / {t.out_of_order:,}", ""),
    ]
    return figures


_TOTALS_SHOWN = frozenset(
    {
        "connections_attempted",
        "connections_opened",
        "connections_failed",
        "peak_connections",
        "sent",
        "acked",
        "expected_deliveries",
        "delivered",
        "lost",
        "duplicated",
        "out_of_order",
        "reconnects",
        "bytes_sent",
        "bytes_received",
        "failures_by_cause",
        "closes_by_code",
        "errors_by_code",
    }
)


def _other_counters(results: Results) -> list[tuple[str, str]]:
    """Counters the template does not lay out by name (the engine may add more): shown as
    they are, so nothing a run recorded is hidden."""
    rows = []
    for name in results.totals.__struct_fields__:
        value = getattr(results.totals, name)
        if name in _TOTALS_SHOWN or value is None:
            continue
        if not isinstance(value, bool) and value in (0, {}, []):
            continue
        if isinstance(value, dict):
            text = " · ".join(
                f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in sorted(value.items())
            )
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        rows.append((name.replace("_", " "), text))
    return rows


def _latency_rows(results: Results) -> list[dict[str, str]]:
    return [
        {
            "kind": kind,
            "meaning": LATENCY_NAMES.get(kind, ""),
            "count": f"{summary.count:,}",
            **{
                key: format_ms(latency_ms(results, kind, key))
                for key in ("p50", "p90", "p99", "p999", "max", "mean")
            },
        }
        for kind, summary in results.latency.items()
    ]


def render_html(results: Results) -> str:
    """The report as one HTML document."""
    holds, identity = accounting(results)
    charts = build_charts(results)
    return _env.get_template("report.html.j2").render(
        r=results,
        outcome=run_outcome(results),
        verdicts=[view_verdict(v) for v in results.verdicts],
        figures=_key_figures(results),
        charts=[(c, Markup(c.svg) if c.svg else None) for c in charts],
        latency_rows=_latency_rows(results),
        saturation=saturation_thresholds(results),
        other_counters=_other_counters(results),
        identity_holds=holds,
        identity=identity,
        config_rows=flatten(results.run.config),
        slo_rows=flatten(results.run.slo),
        server_json=json.dumps(results.server, indent=2, ensure_ascii=False)
        if results.server
        else "",
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        version=__version__,
    )
