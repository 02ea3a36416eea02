"""The storm figures of a fault (loadtest/faults/analysis.py ``storm_figures``), exactly.

Socket-free: the clients' recovery records are made here with known timestamps, and
the rates, the 100 ms counts and the time until 99 % were back follow by arithmetic.
The real fault runs (test_faults.py) check the same fields on real storms.
"""

from __future__ import annotations

import re

import msgspec

from loadtest.client import Recovery
from loadtest.faults.analysis import STORM_MAX_BINS, storm_figures
from rtbench.report.charts import build_charts
from tests.report.factory import make_results

MS = 1_000_000
START = 5_000 * MS  # the fault's start on the monotonic clock


def _back(at_ms: float, resumed_ms: float | None = None, complete: bool = True) -> Recovery:
    """A client lost at the fault's start, welcomed at ``at_ms``, resumed at ``resumed_ms``."""
    resumed = at_ms + 5 if resumed_ms is None else resumed_ms
    return Recovery(
        START,
        "close_1012",
        reconnected_ns=START + int(at_ms * MS),
        resumed_ns=START + int(resumed * MS),
        attempts=1,
        complete=complete,
    )


def test_no_losses_no_storm() -> None:
    assert storm_figures([], START) == {}


def test_rates_counts_and_the_99_percent_time() -> None:
    # 100 clients: 50 back in [0, 100) ms, 30 in [200, 300), 20 in [400, 500)
    records = [_back(10 + i) for i in range(50)]
    records += [_back(210 + i) for i in range(30)]
    records += [_back(410 + i) for i in range(20)]
    storm = storm_figures(records, START)
    assert storm["losses"] == storm["reconnected"] == storm["resumed_complete"] == 100
    assert storm["reconnects_per_100ms"] == [50, 0, 30, 0, 20]
    # the busiest 100 ms held 50 welcomes: 500 a second; 100 over 5 bins of 100 ms: 200 a second
    assert storm["handshakes_per_s"] == {"peak": 500.0, "mean": 200.0}
    assert storm["first_reconnect_s"] == 0.01 and storm["last_reconnect_s"] == 0.429
    # the 99th client of 100 resumed at 410 + 18 + 5 ms
    assert storm["resumed_99_s"] == 0.433
    assert storm["last_loss_s"] == 0.0  # everyone lost their connection at the start


def test_the_mean_spans_only_the_storm_not_the_quiet_before_it() -> None:
    # a restart: nobody back for 1 s (the server starts), then 40 clients in 200 ms
    records = [_back(1_000 + 5 * i) for i in range(40)]
    storm = storm_figures(records, START)
    assert storm["reconnects_per_100ms"][:10] == [0] * 10
    assert storm["reconnects_per_100ms"][10:] == [20, 20]
    assert storm["handshakes_per_s"] == {"peak": 200.0, "mean": 200.0}
    assert storm["first_reconnect_s"] == 1.0 and storm["last_reconnect_s"] == 1.195


def test_a_straggler_does_not_stretch_the_mean() -> None:
    # 200 clients back within 200 ms, one more after an attempt timed out at 3 s
    records = [_back(i) for i in range(200)] + [_back(3_050)]
    storm = storm_figures(records, START)
    assert storm["handshakes_per_s"] == {"peak": 1000.0, "mean": 1000.0}
    assert storm["last_reconnect_s"] == 3.05 and len(storm["reconnects_per_100ms"]) == 31
    assert storm["resumed_99_s"] == 0.203  # 199 of 201: the 199th resumed at 198 + 5 ms


def test_a_client_back_without_its_missed_items_is_not_back() -> None:
    # 200 clients; 3 resumed past a gap the server could not replay: 197 < 198 needed
    records = [_back(10 + i % 100) for i in range(197)]
    records += [_back(20, complete=False) for _ in range(3)]
    storm = storm_figures(records, START)
    assert storm["resumed_complete"] == 197 and "resumed_99_s" not in storm
    # with one of them whole, 198 of 200 are: the 198th resume is the storm's end
    records[-1] = _back(900, resumed_ms=1_234)
    storm = storm_figures(records, START)
    assert storm["resumed_99_s"] == 1.234


def test_a_client_that_never_came_back_counts_against_the_99_percent() -> None:
    records = [_back(10) for _ in range(99)] + [Recovery(START, "dropped", attempts=7)]
    storm = storm_figures(records, START)
    assert storm["reconnected"] == 99 and storm["losses"] == 100
    assert storm["resumed_99_s"] == 0.015  # 99 of 100 is exactly 99 %
    records.append(Recovery(START, "dropped", attempts=7))
    assert "resumed_99_s" not in storm_figures(records, START)  # 99 of 101 is not


def test_a_long_tail_keeps_the_figures_but_not_every_count() -> None:
    records = [_back(10), _back(120_000)]  # one client back after two minutes
    storm = storm_figures(records, START)
    assert len(storm["reconnects_per_100ms"]) == STORM_MAX_BINS
    assert storm["reconnects_cut_at_s"] == 60.0
    assert storm["last_reconnect_s"] == 120.0
    assert storm["resumed_99_s"] == 120.005  # 2 of 2 needed (99 % of 2, rounded up)


def test_the_report_draws_the_storm_of_each_fault() -> None:
    records = [_back(10 + i) for i in range(50)] + [_back(210 + i) for i in range(30)]
    storm = storm_figures(records, START)
    faults = [
        {"spec": "drain:30/200ms@8s", "kind": "drain", "storm": storm},
        {"spec": "cut@12s", "kind": "cut"},  # no storm figures: no line
    ]
    base = make_results()
    results = msgspec.structs.replace(base, run=msgspec.structs.replace(base.run, faults=faults))
    (chart,) = [c for c in build_charts(results) if c.id == "storm"]
    assert chart.svg is not None and "drain:30/200ms@8s" in chart.svg
    assert [int(n) for n in re.findall(r'data-points="(\d+)"', chart.svg)] == [3]
    assert all(c.id != "storm" for c in build_charts(base))  # no fault: no storm chart
