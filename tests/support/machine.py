"""The machine lock for tests that stall or load a process while figures are measured.

``benchmarks.lock``'s lock (/tmp/rtbench-bench.lock): these machines have two shared
cores, and a stall or a CPU hog beside another load run would make both runs' figures
false. A test waits a bounded time for it and skips rather than wait for ever.

The wait is half of pytest's per-test timeout (300 s, ``[tool.pytest.ini_options]`` in
pyproject.toml), because that timeout counts this wait too: the longest test here runs
about a minute after it gets the lock, so a test queued behind a long benchmark skips
with this message instead of being killed by the timeout as a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def machine_lock(wait_s: float = 150.0) -> Iterator[None]:
    from benchmarks.lock import LOCK_PATH, PATH_ENV, held_by_ancestor, holding

    if held_by_ancestor():
        yield
        return
    with open(os.environ.get(PATH_ENV, LOCK_PATH), "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("the machine lock stayed busy (another load run)")
                time.sleep(1)  # poll the lock; a load run holds it for seconds to minutes
        with holding(handle):
            yield
