"""rtbench.bounded: the bounded memory every server and load-test cache shares."""

from __future__ import annotations

import pytest

from rtbench.bounded import BoundedDict


def test_put_forgets_the_oldest_past_the_limit() -> None:
    d: BoundedDict[int, str] = BoundedDict(3)
    assert [d.put(k, str(k)) for k in range(3)] == [None, None, None]
    assert d.put(3, "3") == (0, "0")
    assert d.put(4, "4") == (1, "1")
    assert list(d.items()) == [(2, "2"), (3, "3"), (4, "4")]


def test_replacing_keeps_the_place_renewing_moves_it_last() -> None:
    d: BoundedDict[str, int] = BoundedDict(2)
    d.put("a", 1)
    d.put("b", 2)
    assert d.put("a", 10) is None  # replaced in place: still the oldest
    assert d.put("c", 3) == ("a", 10)
    assert d.renew("b", 20) is None  # seen again: now the newest
    assert d.put("d", 4) == ("c", 3)
    assert list(d) == ["b", "d"]


def test_a_full_map_evicts_in_constant_time_whatever_came_before() -> None:
    """The reason for the class: 65,536 entries, evicting one per insert, 200,000 times.
    A plain dict's ``next(iter(d))`` walks past every slot deleted from its front since its
    last resize; counted here as work, not timed: the oldest is always found at once."""
    d: BoundedDict[int, int] = BoundedDict(65_536)
    evicted = 0
    for k in range(200_000):
        gone = d.put(k, k)
        if gone is not None:
            assert gone == (evicted, evicted)  # oldest first, every time
            evicted += 1
    assert len(d) == 65_536 and evicted == 200_000 - 65_536
    assert next(iter(d)) == 200_000 - 65_536


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedDict(0)
