"""A room's ring serves any seq range it holds, from whichever end is nearer.

``Room.frames`` walks the deque from the newest end when the range is nearer to it (a
resume asks for the newest few of up to ``ring_size`` frames); both walks must return
exactly the frames of ``first..last``, in order, whatever the ring's size and fill.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reference_server.rooms import Room


@given(
    ring=st.integers(1, 50),
    pushed=st.integers(1, 120),
    data=st.data(),
)
def test_frames_returns_the_range_in_order(ring: int, pushed: int, data: st.DataObject) -> None:
    room = Room("lobby", False, 0, {}, ring)
    for seq in range(1, pushed + 1):
        assert room.push(seq, b"frame-%d" % seq)
    first = data.draw(st.integers(room.ring_first, room.seq), label="first")
    last = data.draw(st.integers(first, room.seq), label="last")
    assert room.frames(first, last) == [b"frame-%d" % seq for seq in range(first, last + 1)]
