"""Uptime arithmetic: ratios per window, error budget, burn rate (Google SRE workbook terms).

- *Interval*: one run of the target's message probe (delivery, or echo round trip).
  It is good when a synthetic client could connect, send and receive in time.
- *Uptime ratio* over a window: good intervals / observed intervals. Intervals in
  which the monitor was not running are not counted either way (``coverage`` says
  how much of the window was observed).
- *Error budget* of the SLO window: the bad intervals the objective allows over the
  whole window, ``(1 - objective) * window / interval``. The SLO is kept while the
  bad intervals seen in the trailing window stay within it. This is how a windowed
  SLO is judged while the window is still running: a monitor started ten minutes ago
  that saw one bad minute has spent 2.3 % of a 30-day 99.9 % budget, not broken it.
- *Burn rate* over a window: the bad share of its intervals divided by the allowed
  bad share. 1.0 spends the budget exactly over the SLO window; 14.4 spends 2 % of a
  30-day budget in an hour (the page-worthy rate of the SRE workbook).
"""

from __future__ import annotations

from msgspec import Struct


class WindowView(Struct, kw_only=True):
    window: str
    seconds: int
    total: int
    good: int
    ratio: float | None  # 0..1, None when nothing was observed
    burn_rate: float | None
    coverage: float  # observed intervals / intervals the window holds, 0..1


class BudgetView(Struct, kw_only=True):
    window: str
    allowed: float  # bad intervals the objective allows over the whole window
    used: int  # bad intervals seen in the window
    remaining: float  # 1.0 untouched, 0.0 spent, negative overspent


def allowed_bad_share(objective_percent: float) -> float:
    """99.9 -> 0.001."""
    return 1.0 - objective_percent / 100.0


def window_view(
    window: str,
    seconds: int,
    total: int,
    good: int,
    interval_s: float,
    objective_percent: float,
) -> WindowView:
    ratio = good / total if total else None
    burn = (1.0 - ratio) / allowed_bad_share(objective_percent) if ratio is not None else None
    expected = max(seconds / interval_s, 1.0)
    return WindowView(
        window=window,
        seconds=seconds,
        total=total,
        good=good,
        ratio=ratio,
        burn_rate=burn,
        coverage=min(1.0, total / expected),
    )


def error_budget(
    window: str,
    seconds: int,
    total: int,
    good: int,
    interval_s: float,
    objective_percent: float,
) -> BudgetView:
    """Budget of the SLO window; a window observed with a shorter interval earns more intervals."""
    intervals = max(seconds / interval_s, float(total))
    allowed = allowed_bad_share(objective_percent) * intervals
    used = total - good
    return BudgetView(
        window=window,
        allowed=allowed,
        used=used,
        remaining=1.0 - used / allowed if allowed > 0 else 0.0,
    )
