"""What several benchmarks measure alike: one home, so their figures stay comparable.

A benchmark script keeps what it measures and how it writes it; the shared mechanics live
here (and in ``procs`` for servers and cores, ``lock`` for the machine lock). Benchmark
scripts never import each other (tests/test_layers.py holds them to it): a change to
one report's method must not quietly change another's.

- ``engine_run``: one ``rtbench run`` or ``rtbench locust --headless`` on the client core,
  read back as results.json (the generator comparisons drive both engines the same way);
- ``sending_rows`` / ``measured_cpu_seconds``: the generator's CPU over the seconds in
  which it sent, the per-CPU-second figures' denominator everywhere;
- ``median_of`` / ``median_present`` / ``median_figures``: medians of per-run rows (every
  run measured the figure / only some did) and of dataclass figures;
- ``number``: the reports' number cells ("-" for what was not measured).
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.procs import Cores

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
"""The ``rtbench`` console script, run by this interpreter (no PATH lookup)."""
CLIENT = Cores.detect().client_prefix()
"""``taskset -c <client core>``, or nothing on one core: read once, at import, as the
benchmarks read their cores."""

T = TypeVar("T")


def engine_run(engine: str, url: str, *args: str, protocol: str | None = None) -> dict[str, Any]:
    """One ``rtbench run`` (``engine="native"``) or ``rtbench locust --headless`` on the
    client core (``taskset``, or nothing on one core).

    Returns results.json as a dict; a Locust run also carries ``locust_stats``: the
    ``delivery`` row of Locust's own statistics. Both engines take the same flags, which
    is what lets one measurement drive either.
    """
    with tempfile.TemporaryDirectory(prefix=f"rtbench-{engine}-") as out:
        command = [*CLIENT, *RTBENCH]
        command += ["run" if engine == "native" else "locust", *args]
        command += ["--target", url, "--out", out]
        if protocol:
            command += ["--protocol", protocol]
        if engine == "native":
            command.append("--quiet")
        else:
            command += ["--headless", "--", "--only-summary", "--csv", f"{out}/locust"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        path = Path(out) / "results.json"
        if not path.exists():
            tail = (done.stderr.strip() or done.stdout.strip())[-500:]
            raise RuntimeError(f"{engine} {' '.join(args)} wrote no results: {tail}")
        results: dict[str, Any] = json.loads(path.read_text())
        stats = Path(out) / "locust_stats.csv"
        if stats.exists():
            with stats.open() as handle:
                rows = {row["Name"]: row for row in csv.DictReader(handle)}
            results["locust_stats"] = rows.get("delivery", {})
        return results


def sending_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-second rows of results.json in which requests were sent: ramp and drain
    seconds would dilute a per-CPU-second figure."""
    return [s for s in results["series"] if s.get("sent", 0) > 0]


def measured_cpu_seconds(results: dict[str, Any]) -> tuple[int, float]:
    """(round trips, generator CPU-seconds) over the seconds in which requests were sent."""
    rows = sending_rows(results)
    return (
        sum(s.get("delivered", 0) for s in rows),
        sum(s.get("generator_cpu", 0.0) for s in rows) / 100.0,
    )


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    """The median of one figure over per-run rows (every row has it)."""
    return statistics.median(r[key] for r in rows)


def median_present(rows: list[dict[str, Any]], key: str) -> float | None:
    """The median of one figure over the runs that measured it (None when none did): a
    run that could not measure a figure must not pull its median down."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def median_figures(runs: list[T], kind: type[T]) -> T:
    """Field by field medians of dataclass figures of class ``kind`` (an empty one when
    there are no runs); a ``notes`` field is pooled, not averaged."""
    out: Any = type(runs[0])() if runs else kind()
    figures: list[Any] = list(runs)
    for name in asdict(out):
        if name == "notes":
            out.notes = sorted({n for r in figures for n in r.notes})
            continue
        values = [getattr(r, name) for r in figures if getattr(r, name) is not None]
        setattr(out, name, statistics.median(values) if values else None)
    return out


def number(value: float | None, digits: int = 2, *, whole_ints: bool = True) -> str:
    """A report cell: thousands separated, ``digits`` decimals, "-" when not measured.

    ``whole_ints``: an int (a count, or a median of an odd number of counts) is written
    without decimals; with False every value gets ``digits`` decimals.
    """
    if value is None:
        return "-"
    if whole_ints and not (isinstance(value, float) and digits):
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
