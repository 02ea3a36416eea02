"""Run the real ``rtbench`` command in a subprocess, as a user would, and read its results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rtbench.results import Results, read_results

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]


def rtbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rtbench ARGS``; bounded in time (its subprocess is ended by ``run``'s timeout)."""
    return subprocess.run(
        [*RTBENCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def rtbench_run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Results]:
    """``rtbench run ARGS --quiet --out OUT`` and the results.json it wrote."""
    done = rtbench("run", *args, "--quiet", "--out", str(out))
    assert (out / "results.json").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, read_results(out / "results.json")
