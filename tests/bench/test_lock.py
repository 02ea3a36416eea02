"""The machine lock: exclusive between runs, re-entrant for the holder's own children."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.lock import HELD_ENV, exclusive_machine, held_by_ancestor

CHILD = (
    "from benchmarks.lock import exclusive_machine\n"
    "with exclusive_machine('child'):\n"
    "    print('inside')\n"
)


def _child(timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_child_of_the_holder_passes_through() -> None:
    with exclusive_machine("suite"):
        assert os.environ[HELD_ENV] == str(os.getpid())
        done = _child(timeout=30)
        with exclusive_machine("nested in-process"):
            pass
    assert done.stdout.strip() == "inside"
    assert HELD_ENV not in os.environ


def test_unrelated_process_waits_for_the_holder() -> None:
    with exclusive_machine("suite"):
        env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
        waiting = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=1.5)  # blocked on the lock, not passing through
    out, err = waiting.communicate(timeout=30)
    assert out.strip() == "inside"
    assert "waiting for another load run" in err


def test_stale_holder_variable_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        monkeypatch.setenv(HELD_ENV, str(sibling.pid))  # alive, but not an ancestor
        assert not held_by_ancestor()
        monkeypatch.setenv(HELD_ENV, "not-a-pid")
        assert not held_by_ancestor()
        monkeypatch.setenv(HELD_ENV, str(os.getppid()))
        assert held_by_ancestor()
    finally:
        sibling.kill()
        sibling.wait()
