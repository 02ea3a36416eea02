"""The suite's tests run real benchmarks at tiny sizes, on a lock file of their own.

A test is not a benchmark: it must not wait behind (or block) someone's real benchmark
run on the machine lock, so every test here points ``RTBENCH_BENCH_LOCK`` elsewhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.lock import HELD_ENV, PATH_ENV
from tests.conftest import need_service


@pytest.fixture(autouse=True)
def private_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lock = tmp_path / "bench.lock"
    monkeypatch.setenv(PATH_ENV, str(lock))
    monkeypatch.delenv(HELD_ENV, raising=False)
    return lock


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js and npm for the ws peer (CI installs them; skip elsewhere when missing)."""
    found = shutil.which("node")
    need_service("Node.js", found is not None and shutil.which("npm") is not None, "node, npm")
    from benchmarks.procs import ensure_node_ws

    ensure_node_ws()
    return found or "node"
