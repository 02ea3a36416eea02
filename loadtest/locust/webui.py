"""The "Realtime SLO" tab of Locust's web UI: the four targets now, against the SLO file.

Locust's React UI (2.x) shows extra tabs declared in its template arguments
(``extended_tabs``, with a table layout per tab in ``extended_tables``) and fills
them from ``extended_stats`` in the ``/stats/requests`` JSON it polls every couple of
seconds. So the tab is two template arguments and an ``after_request`` hook that adds
our rows to that JSON: no fork of Locust's UI. ``/rtbench/slo`` serves the same rows
as JSON for scripts.

While a run is going the rows are live figures from every Locust process (merged on the
master from the realtime snapshot each worker adds to its stats report); once the run
has drained they are the run's final verdicts, the ones the exit code follows. Live or
final, each latency verdict is bounded by the Locust processes' own delay (their delay
meter and send lag) through the native rule (``loadtest.judge.bounded_by``): the bound
is shown beside the figure, and a failure within it reads "inconclusive".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from loadtest.judge import bounded_by, delivery_verdict, verdict_bound
from loadtest.locust.control import Conductor, MasterRun, no_drop_detail
from rtbench import slo as slo_mod
from rtbench.slo import Status, Target, Verdict

TAB_KEY = "realtime-slo"
TAB_TITLE = "Realtime SLO"
COLUMNS = (  # no "name" column: Locust's table sorts by it, and our order is the point
    ("figure", "Target / figure"),
    ("objective", "Objective"),
    ("measured", "Measured"),
    ("bound", "Generator's own delay"),
    ("status", "Status"),
    ("detail", "Detail"),
)
TARGET_NAMES = {
    Target.UPTIME: "uptime",
    Target.DELIVERY_LATENCY: "delivery latency",
    Target.CONNECTIONS: "concurrent connections",
    Target.RECOVERY: "connection recovery",
}
LIVE_BOUNDED = {Target.DELIVERY_LATENCY: "delivery", Target.RECOVERY: "reconnect"}
"""The latency behind each live verdict the generator's own delay bounds."""
STATUS_TEXT = {Status.PASS: "pass", Status.FAIL: "FAIL", Status.NOT_MEASURED: "not measured"}


def _measured(v: Verdict) -> str:
    if v.measured is None:
        return "-"
    digits = 0 if v.unit == "connections" else 2
    return f"{v.measured:,.{digits}f} {v.unit}".strip()


def _row(
    name: str, objective: str, measured: str, status: str, detail: str, bound: str = ""
) -> dict[str, str]:
    return {
        "figure": name,
        "objective": objective,
        "measured": measured,
        "bound": bound,
        "status": status,
        "detail": detail,
    }


def _bound(v: Verdict, bound_ms: float | None) -> str:
    """The generator's own delay beside a latency figure: the most it added at the
    verdict's percentile (``loadtest.judge.generator_bound``)."""
    if bound_ms is None or v.status is Status.NOT_MEASURED:
        return ""
    return f"up to {bound_ms:,.2f} ms at {v.objective.split(' ', 1)[0]}"


def verdict_row(v: Verdict, live: bool, bound_ms: float | None = None) -> dict[str, str]:
    status = STATUS_TEXT[v.status]
    if v.failed and not v.trusted:
        # exit code 4: the generator's own delay (or its saturation) could explain the
        # failure; the detail says which, with the figures
        status = "inconclusive"
    if v.status is not Status.NOT_MEASURED and live:
        status += " so far"
    if v.status is Status.PASS and not v.trusted:
        status += " (untrusted)"
    name = TARGET_NAMES[v.target]
    return _row(name, v.objective, _measured(v), status, v.detail, _bound(v, bound_ms))


def live_verdicts(run: MasterRun, view: dict[str, Any]) -> list[Verdict]:
    """The four targets judged on the figures so far (known gaps count as lost), each
    latency verdict bounded by the generator's own delay so far, as at the end."""
    slo = run.slo
    delays, cause = view["histograms"], view["cause"]
    delivered = view["counters"].get("delivered", 0)
    latency = delivery_verdict(slo, view["delivery"], delivered + view["missing"], delivered)
    if delivered == 0 and view["missing"] == 0:
        latency = slo_mod.judge_percentile(slo, slo_mod.Target.DELIVERY_LATENCY, None, 0)
    threshold = slo.delivery_latency.threshold_ms
    latency = bounded_by(latency, delays, "delivery", threshold, cause)
    reconnect = view["reconnect"]
    recovery = slo_mod.judge_percentile(
        slo,
        slo_mod.Target.RECOVERY,
        reconnect.percentile_ms(slo.recovery.percentile) if reconnect.count else None,
        reconnect.count,
    )
    recovery = bounded_by(recovery, delays, "reconnect", slo.recovery.threshold_ms, cause)
    uptime = slo_mod.judge_uptime(slo, 0, 0, slo.uptime.window)
    return [
        Verdict(
            target=uptime.target,
            status=uptime.status,
            objective=uptime.objective,
            detail="measured over time by the monitor (`rtbench monitor`), not by a load run",
        ),
        latency,
        slo_mod.judge_connections(slo, view["open_now"], run.plan.connections),
        no_drop_detail(recovery),
    ]


def slo_rows(conductor: Conductor, snapshots: Callable[[MasterRun], list[dict]]) -> list[dict]:
    """The tab's rows: four targets first, then deliveries and the run's phase."""
    run = conductor.run
    if run is None:
        note = conductor.error or "no test has run yet: start one"
        slo = conductor.slo
        rows = [verdict_row(v, live=False) for v in _idle_verdicts(slo)]
        return [*rows, _row("run", "", "not started", "", note)]
    elapsed = f"{time.time() - run.started_wall:,.0f} s"
    phase = _row("run", run.scenario.scenario.value, run.phase, "", f"{run.url}, {elapsed}")
    if run.results is not None:
        results = run.results
        t = results.totals
        rows = [verdict_row(v, False, run.bounds.get(v.target)) for v in results.verdicts]
        rows += [
            _row("deliveries", "", f"{t.delivered:,} of {t.expected_deliveries:,}", "", ""),
            _row("lost deliveries", "0", f"{t.lost:,}", "ok" if not t.lost else "LOST", ""),
            _row(
                "duplicated deliveries",
                "0",
                f"{t.duplicated:,}",
                "ok" if not t.duplicated else "DUPLICATES",
                f"{t.out_of_order:,} out of order",
            ),
            _row("connections held", "", f"{t.connections_held:,}", "", "when sending ended"),
        ]
        return [*rows, phase]
    view = run.live_view(snapshots(run))
    c = view["counters"]
    delays = view["histograms"]
    rows = [
        verdict_row(v, True, verdict_bound(v, delays, LIVE_BOUNDED[v.target]))
        if v.target in LIVE_BOUNDED
        else verdict_row(v, True)
        for v in live_verdicts(run, view)
    ]
    rows += [
        _row(
            "deliveries",
            "",
            f"{c.get('delivered', 0):,} of {c.get('expected', 0):,} expected so far",
            "",
            "the rest are in flight or lost: the drain at the end tells",
        ),
        _row(
            "lost deliveries",
            "0",
            f"{view['missing']:,}",
            "ok" if not view["missing"] else "LOST",
            "gaps in the sender streams so far",
        ),
        _row(
            "duplicated deliveries",
            "0",
            f"{c.get('duplicated', 0):,}",
            "ok" if not c.get("duplicated") else "DUPLICATES",
            f"{c.get('out_of_order', 0):,} out of order",
        ),
        _row("connections held", f"{run.plan.connections:,}", f"{view['open_now']:,}", "", ""),
    ]
    return [*rows, phase]


def _idle_verdicts(slo: slo_mod.SLO) -> list[Verdict]:
    return [
        slo_mod.judge_uptime(slo, 0, 0, slo.uptime.window),
        slo_mod.judge_percentile(slo, slo_mod.Target.DELIVERY_LATENCY, None, 0),
        slo_mod.judge_connections(slo, None, None),
        slo_mod.judge_percentile(slo, slo_mod.Target.RECOVERY, None, 0),
    ]


def install(
    web_ui: Any, conductor: Conductor, snapshots: Callable[[MasterRun], list[dict]]
) -> None:
    """Add the tab to Locust's web UI (its own extension points, nothing patched)."""
    from flask import jsonify, request

    web_ui.template_args["extended_tabs"] = [{"title": TAB_TITLE, "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]

    @web_ui.app.after_request
    def add_realtime_rows(response: Any) -> Any:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        data = response.get_json(silent=True)
        if not isinstance(data, dict):
            return response
        rows = slo_rows(conductor, snapshots)
        data["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
        response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/rtbench/slo")
    @web_ui.auth_required_if_enabled
    def realtime_slo() -> Any:
        run = conductor.run
        return jsonify(
            {
                "phase": run.phase if run is not None else "not started",
                "rows": slo_rows(conductor, snapshots),
                "exit_code": run.results.exit_code if run and run.results else None,
            }
        )
