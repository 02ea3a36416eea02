"""What every output says about a run, decided once: HTML, JUnit and Markdown agree.

A verdict is shown in one of four states. ``untrustworthy`` wins over pass and
fail whenever the generator was saturated: its figures may be the generator's
own, so the reader must not take them as the server's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from rtbench.exitcodes import ExitCode
from rtbench.results import Results
from rtbench.slo import Status, Verdict, exit_code_for

State = Literal["pass", "fail", "not_measured", "untrustworthy"]

TARGET_NAMES = {
    "uptime": "Uptime",
    "delivery_latency": "Delivery latency",
    "connections": "Concurrent connections",
    "recovery": "Connection recovery",
}

LATENCY_NAMES = {
    "delivery": "delivery (scheduled send → received, every recipient)",
    "ack": "ack (scheduled send → durable ack)",
    "handshake": "handshake (connect → welcome)",
    "rtt": "round trip (ping → pong)",
    "recovery": "recovery (lost → resumed with every missed message)",
    "reconnect": "reconnect (lost → connected again)",
    "send_lag": "send lag (scheduled send → written by the generator)",
    "setup": "setup (connect → hello and joins done)",
}


def format_number(value: float | None, unit: str) -> str:
    """A figure in its unit's style, without the unit: 0.123 / 4.56 / 87.3 / 1,520 ms,
    99.95 %, 10,000 connections."""
    if value is None:
        return "—"
    if unit == "ms":
        magnitude = abs(value)
        if magnitude < 1:
            return f"{value:.3f}"
        if magnitude < 10:
            return f"{value:.2f}"
        if magnitude < 100:
            return f"{value:.1f}"
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:.4g}"
    if unit in {"connections", "deliveries/s"} or abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_value(value: float | None, unit: str) -> str:
    """A measured figure with its unit, as people read it."""
    text = format_number(value, unit)
    return text if value is None else f"{text} {unit}".rstrip()


def format_ms(value: float | None) -> str:
    return format_value(value, "ms")


@dataclass(frozen=True)
class VerdictView:
    target: str
    name: str
    objective: str
    measured: str
    state: State
    label: str  # "pass", "FAIL", "not measured", "untrustworthy (fail)"
    detail: str
    verdict: Verdict


def verdict_state(verdict: Verdict) -> State:
    if verdict.status is Status.NOT_MEASURED:
        return "not_measured"
    if not verdict.trusted:
        return "untrustworthy"
    return "pass" if verdict.status is Status.PASS else "fail"


def view_verdict(verdict: Verdict) -> VerdictView:
    state = verdict_state(verdict)
    label = {
        "pass": "pass",
        "fail": "FAIL",
        "not_measured": "not measured",
        "untrustworthy": f"untrustworthy ({verdict.status.value})",
    }[state]
    return VerdictView(
        target=verdict.target.value,
        name=TARGET_NAMES.get(verdict.target.value, verdict.target.value),
        objective=verdict.objective,
        measured=format_value(verdict.measured, verdict.unit),
        state=state,
        label=label,
        detail=verdict.detail,
        verdict=verdict,
    )


@dataclass(frozen=True)
class Outcome:
    code: int
    state: Literal["pass", "fail", "inconclusive", "unreachable", "not_measured"]
    headline: str


def run_outcome(results: Results) -> Outcome:
    """The run's one-line answer, consistent with the exit code ``rtbench run`` gave."""
    if results.exit_code == ExitCode.UNREACHABLE:
        return Outcome(ExitCode.UNREACHABLE, "unreachable", "target unreachable")
    code = exit_code_for(results.verdicts)
    if code == ExitCode.SLO_FAILED:
        failed = sum(1 for v in results.verdicts if v.failed and v.trusted)
        return Outcome(code, "fail", f"SLO failed ({failed} of {len(results.verdicts)} targets)")
    if code == ExitCode.INCONCLUSIVE:
        return Outcome(code, "inconclusive", "inconclusive: the load generator was saturated")
    measured = [v for v in results.verdicts if v.status is not Status.NOT_MEASURED]
    if not measured:
        return Outcome(code, "not_measured", "no target was measured")
    if len(measured) == len(results.verdicts):
        return Outcome(code, "pass", f"all {len(measured)} targets pass")
    return Outcome(code, "pass", f"every measured target passed ({len(measured)} measured)")


def accounting(results: Results) -> tuple[bool, str]:
    """Check ``expected = delivered + lost``: if it fails, the figures themselves are suspect."""
    t = results.totals
    holds = t.expected_deliveries == t.delivered + t.lost
    relation = "=" if holds else "≠"
    text = (
        f"expected {t.expected_deliveries:,} {relation} delivered {t.delivered:,} + lost {t.lost:,}"
    )
    return holds, text


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested config as dotted keys: a scenario's parameters read as one table."""
    if isinstance(data, dict) and data:
        rows: list[tuple[str, str]] = []
        for key, value in data.items():
            rows.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(data, str):
        return [(prefix, data)]
    return [(prefix, json.dumps(data, ensure_ascii=False))]
