"""The HTML status page: one self-contained document (inline CSS, no script, no CDN).

Rendered from the same snapshot as /healthz, so the page and the health check never
disagree. It reloads itself with a meta refresh, which needs no JavaScript.
"""

from __future__ import annotations

import time

import jinja2

from monitor.evaluate import Bar, Snapshot
from rtbench import __version__
from rtbench.slo import Verdict

SLO_NAMES = {
    "uptime": "Uptime",
    "delivery_latency": "Delivery latency",
    "connections": "Concurrent connections",
    "recovery": "Connection recovery",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("monitor", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:,.1f} ms"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.3f} %"


def fmt_num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def fmt_measured(verdict: Verdict) -> str:
    if verdict.measured is None:
        return "not measured"
    if verdict.unit == "%":
        return f"{verdict.measured:.3f} % observed"
    if verdict.unit == "ms":
        return f"{verdict.measured:,.1f} ms"
    return f"{verdict.measured:,.0f} {verdict.unit}"


def status_word(verdict: Verdict) -> str:
    """The word on a card's pill. Uptime is judged by the SLO window's error budget, so a
    young monitor that saw an outage is "within budget", never a bare "pass" beside 80 %."""
    if verdict.target.value == "uptime" and verdict.status.value != "not_measured":
        return "within budget" if verdict.status.value == "pass" else "budget spent or down"
    if verdict.failed and not verdict.trusted:  # the monitor's own delay could explain it
        return "inconclusive"
    return verdict.status.value.replace("_", " ")


def bar_class(bar: Bar, objective: float) -> str:
    if bar.total == 0:
        return "none"
    ratio = bar.good / bar.total
    if ratio * 100 > objective:
        return "good"
    return "warn" if ratio >= 0.9 else "bad"


def bar_title(bar: Bar) -> str:
    when = fmt_time(bar.start)
    if bar.total == 0:
        return f"{when}: no probe"
    return f"{when}: {bar.good / bar.total * 100:.3f} % ({bar.good:,} of {bar.total:,} good)"


def render_status(snapshot: Snapshot, refresh_s: int = 10) -> bytes:
    objective = snapshot.slo["uptime"]["objective"]
    template = _env.get_template("status.html.j2")
    return template.render(
        snap=snapshot,
        refresh=refresh_s,
        version=__version__,
        slo_names=SLO_NAMES,
        fmt_time=fmt_time,
        fmt_s=fmt_s,
        fmt_ms=fmt_ms,
        fmt_ratio=fmt_ratio,
        fmt_num=fmt_num,
        fmt_measured=fmt_measured,
        status_word=status_word,
        bar_class=lambda b: bar_class(b, objective),
        bar_title=bar_title,
    ).encode()
