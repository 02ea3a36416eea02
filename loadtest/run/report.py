"""What each load process reports to whoever merges the run: one format for every driver.

A native worker sends these to its coordinator over a pipe (``loadtest.engine.wire``);
a Locust process sends them to its master as Locust custom messages
(``loadtest.locust.messages``). Both are built by the shared tally
(``loadtest.tally.Tally.second_tick`` / ``final``) and merged by one function
(``loadtest.run.outcome.merge``), so the two engines cannot count a run differently.

Counters travel as cumulative totals so a lost or late tick never skews a sum;
histograms travel in HDR's own compressed form so the merge is exact.
"""

from __future__ import annotations

from msgspec import Struct

from loadtest.client.reconnect import Recovery


class Tick(Struct, tag=True):
    second: int  # seconds since t0
    counters: dict[str, int]  # cumulative
    open_now: int
    delivery_hdr: str | None  # deliveries received in this second (encoded HDR, us)
    cpu_percent: float
    loop_lag_ms: float
    rss_bytes: int
    cpus_busy_percent: float | None = None  # the CPUs it may run on, busy with all their work
    # live export only: the other histograms, cumulative, and the losses that ended since
    # the last tick (loadtest.export)
    histograms: dict[str, str] = {}
    recoveries: list[Recovery] = []


class Counts(Struct, tag=True):
    """Cumulative counters between ticks (sent often while draining)."""

    counters: dict[str, int]


class Ready(Struct, tag=True):
    live: bytes  # bitmap of this process's connections that are up and joined
    counters: dict[str, int]


class SendDone(Struct, tag=True):
    held: int  # connections of this process still open when sending ended
    counters: dict[str, int]


class Final(Struct, tag=True):
    counters: dict[str, int]
    histograms: dict[str, str]  # name -> encoded HDR (us)
    failures_by_cause: dict[str, int]
    closes_by_code: dict[str, int]
    errors_by_code: dict[str, int]
    events_by_type: dict[str, int]
    sent_by_second: dict[int, int]  # by scheduled send second (since t0)
    expected_by_second: dict[int, int]
    delivered_by_second: dict[int, int]  # unique deliveries, by their scheduled send second
    held: int
    answering: int  # connect: connections that answered the last heartbeat probe
    cpu_samples: list[float]  # per second of the measured phase
    lag_samples: list[float]
    rss_max: int
    notes: list[str]
    recoveries: list[Recovery] = []  # every connection loss and its recovery (fault runs)
    ontime_by_ds: dict[int, int] = {}  # on-time deliveries by receive decisecond since t0
    cpus: list[int] = []  # the CPUs this process may run on
    cpus_busy_samples: list[float] = []  # per measured second: how busy those CPUs were
