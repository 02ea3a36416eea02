"""One machine-wide lock for load runs and benchmarks.

These machines have two cores: two loads at once make both sets of figures
false. Every macro benchmark holds this lock for its whole run, and people
running loads by hand wrap them in ``flock /tmp/rtbench-bench.lock CMD``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator

LOCK_PATH = os.environ.get("RTBENCH_BENCH_LOCK", "/tmp/rtbench-bench.lock")


@contextlib.contextmanager
def exclusive_machine(what: str) -> Iterator[None]:
    """Hold the benchmark lock; say so when waiting for another run to finish."""
    with open(LOCK_PATH, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{what}] waiting for another load run to finish ({LOCK_PATH})", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
