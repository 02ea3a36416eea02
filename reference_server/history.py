"""History paging arithmetic.

A room's seqs are dense (1..n, every one stored: the store assigns them inside
the commit), so a page's bounds and ``has_more`` follow from numbers alone,
without counting rows.
"""

from __future__ import annotations

from typing import NamedTuple


class Page(NamedTuple):
    first: int  # first seq of the page (first > last: empty page)
    last: int
    has_more: bool  # items lie beyond the page in its direction


class BadRange(ValueError):
    """The bounds are inverted."""


def page_bounds(
    room_seq: int, limit: int, before: int | None = None, after: int | None = None
) -> Page:
    """Which seqs a ``history`` request covers.

    With ``after`` the page starts right after it (oldest first); otherwise it ends
    right before ``before`` (or at the newest item). With both, they bound a window.
    """
    if before is not None and after is not None and before <= after:
        raise BadRange(f"before ({before}) must be greater than after ({after})")
    low = (after or 0) + 1  # lowest seq in the window
    high = room_seq if before is None else min(before - 1, room_seq)  # highest
    if high < low:
        return Page(low, low - 1, False)
    if after is not None:
        last = min(low + limit - 1, high)
        return Page(low, last, last < high)
    first = max(high - limit + 1, low)
    return Page(first, high, first > low)
