"""benchmarks.profile: py-spy's raw output summarised by part, and a real process profiled.

The summary is pure parsing, checked on a hand-written profile whose shares are known;
the recording is checked on a real Python process busy in a function of its own (py-spy
reads another process's memory: root or ptrace rights, which CI has).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.profile import part_of, profiling, summarise
from tests.scaleout.polling import wait_for

ENTRY = "<module> (<string>:1);run (uvloop/__init__.py:92);Runner.run (asyncio/runners.py:118)"
WRITER = "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982)"
WRITER += ";SqliteStore._writer_main (/x/reference_server/store/sqlite.py:170)"
RAW = "\n".join(
    [
        f"{ENTRY} 30",  # the loop's own C code: the innermost Python frame is the runner's
        f"{ENTRY};Commits.on_batch (/x/reference_server/commits.py:173)"
        ";Fanout.to_room (/x/reference_server/fanout.py:98) 20",
        f"{ENTRY};Session.on_frame (/x/reference_server/session.py:80)"
        ";encode (/x/rtbench/protocol/codec.py:12) 10",
        f"{WRITER};_Writer.commit (/x/reference_server/store/sqlite.py:290) 40",
        "not a stack line",
    ]
)


def test_summary_shares_by_part_and_function() -> None:
    summary = summarise(RAW)
    assert summary["samples"] == 100
    parts = summary["parts"]
    assert parts["fsync/store"] == {"own_percent": 40.0, "cumulative_percent": 40.0}
    assert parts["fan-out"] == {"own_percent": 20.0, "cumulative_percent": 20.0}
    assert parts["codec"] == {"own_percent": 10.0, "cumulative_percent": 10.0}
    assert parts["dispatch/handlers"] == {"own_percent": 0.0, "cumulative_percent": 10.0}
    # the loop's runner is an ancestor of every loop stack: only its own samples count
    assert parts["event loop/transport"] == {"own_percent": 30.0, "cumulative_percent": 30.0}
    assert summary["threads"] == {
        "main (event loop)": {
            "percent": 60.0,
            "parts": {"event loop/transport": 50.0, "fan-out": 33.3, "codec": 16.7},
            "top_own": [
                {"function": "asyncio/runners.py:Runner.run", "percent": 50.0},
                {"function": "reference_server/fanout.py:Fanout.to_room", "percent": 33.3},
                {"function": "protocol/codec.py:encode", "percent": 16.7},
            ],
        },
        "store/sqlite.py:SqliteStore._writer_main": {
            "percent": 40.0,
            "parts": {"fsync/store": 100.0},
            "top_own": [{"function": "store/sqlite.py:_Writer.commit", "percent": 100.0}],
        },
    }
    assert summary["top_own"][0] == {"function": "store/sqlite.py:_Writer.commit", "percent": 40.0}
    top_cumulative = {t["function"]: t["percent"] for t in summary["top_cumulative"]}
    assert top_cumulative["reference_server/commits.py:Commits.on_batch"] == 20.0
    assert part_of("whatever (/usr/lib/python3.12/somewhere.py:1)") == "other"


def test_profiling_a_real_process(tmp_path: Path) -> None:
    busy = "def spin_here():\n    while True:\n        sum(range(1000))\nspin_here()\n"
    proc = subprocess.Popen([sys.executable, "-c", busy])
    out = tmp_path / "p.txt"
    try:
        with profiling(proc.pid, out, after_s=0.2, duration_s=1.0) as summary:
            # py-spy ends itself after --duration and then writes its file: wait for that.
            wait_for(lambda: out.exists() and out.stat().st_size > 0, within=30.0)
    finally:
        proc.kill()
        proc.wait()
    assert "error" not in summary, summary
    assert summary["samples"] > 10
    assert summary["top_own"][0]["function"].endswith(":spin_here")
    assert summary["parts"]["other"]["own_percent"] == 100.0
    assert summary["raw"] == str(out)


def test_a_block_shorter_than_the_delay_records_nothing(tmp_path: Path) -> None:
    with profiling(1, tmp_path / "never.txt", after_s=60.0) as summary:
        pass
    assert "before the profile was to start" in summary["error"]
