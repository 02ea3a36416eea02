"""One machine-wide lock for load runs and benchmarks.

These machines have two cores: two loads at once make both sets of figures
false. Every macro benchmark holds this lock for its whole run, and people
running loads by hand wrap them in ``flock /tmp/rtbench-bench.lock CMD``.

The lock is re-entrant along a process tree: ``rtbench bench`` holds it for the whole
suite and runs per-issue scripts (which take it themselves) as child processes. A
``flock`` taken again from a child would wait for its own parent forever, so the holder
exports ``RTBENCH_BENCH_LOCK_HELD`` and a nested ``exclusive_machine`` (in the same
process or a child) then passes straight through.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from typing import IO

LOCK_PATH = "/tmp/rtbench-bench.lock"
PATH_ENV = "RTBENCH_BENCH_LOCK"  # another lock file (the suite's own tests use one)
HELD_ENV = "RTBENCH_BENCH_LOCK_HELD"


def held_by_ancestor() -> bool:
    """True when this process or one of its parents already holds the machine lock."""
    holder = os.environ.get(HELD_ENV, "")
    if not holder.isdigit():
        return False
    pid = int(holder)
    current = os.getpid()
    # Walk up the parent chain: a stale variable inherited from an unrelated, finished
    # run must not let a load run skip the lock.
    while current > 1:
        if current == pid:
            return True
        current = _parent_of(current)
    return False


def _parent_of(pid: int) -> int:
    if pid == os.getpid():
        return os.getppid()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            stat = handle.read()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def exclusive_machine(what: str) -> Iterator[None]:
    """Hold the benchmark lock; say so when waiting for another run to finish."""
    if held_by_ancestor():
        yield
        return
    path = os.environ.get(PATH_ENV, LOCK_PATH)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{what}] waiting for another load run to finish ({path})", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        with holding(handle):
            yield


@contextlib.contextmanager
def holding(handle: IO[str]) -> Iterator[None]:
    """The lock on ``handle`` is taken: say so to child processes (a child ``rtbench bench``
    passes through, ``held_by_ancestor``) until it is released at the end."""
    previous = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = str(os.getpid())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = previous
        fcntl.flock(handle, fcntl.LOCK_UN)
