"""What every benchmark of the suite is handed, and the shape of what it hands back.

A benchmark is a function ``run(ctx) -> Outcome``. The suite writes each outcome to
``<out>/<name>.json`` (the figures of every run, their medians, the goals judged, the
commands that reproduce them) and renders all of them into one Markdown summary.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import Cores


@dataclass
class Context:
    """The suite's settings for one benchmark."""

    out: Path  # the run's output folder (benchmarks may put extra files here)
    quick: bool  # a small, fast version for smoke checks: figures are not for publishing
    runs: int  # repetitions whose median is reported (1 when quick)
    cores: Cores
    tiny: bool = False  # smallest loads that still exercise every path (the suite's tests)

    def keep(self, *parts: object) -> Path:
        """Where a load run's results.json is kept: ``<out>/runs/<parts>.json``."""
        return self.out / "runs" / ("-".join(str(p) for p in parts) + ".json")

    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))


@dataclass
class Goal:
    """A promise a benchmark checks: met, missed, or not decided by this run (``None``)."""

    goal: str  # "fan-out >= 1.2x Node ws per server CPU-second at p99 < 100 ms"
    met: bool | None
    measured: str  # the figure it was judged on, formatted for people
    limit: str = ""  # what bounds the figure (the generator, the store, ...)


@dataclass
class Outcome:
    """What one benchmark found: per-run figures, medians, goals and how to reproduce."""

    name: str
    title: str
    summary: dict[str, Any] = field(default_factory=dict)  # medians, ratios: the headline
    runs: list[dict[str, Any]] = field(default_factory=list)  # every run's raw figures
    goals: list[Goal] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    markdown: str = ""  # a collected script's own Markdown report, shown in the summary
    status: str = "ok"  # ok | skipped | failed
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def median(values: Iterable[float | int | None]) -> float | None:
    """Median of the values that were measured (None when none was)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)
