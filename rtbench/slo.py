"""The SLO file: the four targets every part of rtbench judges against, and their verdicts.

One TOML file is read by ``rtbench run``, the Locust users, the monitor and the
CI gates, so a team states its promises once. Every section is optional; a
missing one takes the default of docs (DESIGN.md):

    [uptime]              # share of probe intervals in which a client could connect, send, receive
    objective = 99.9      # percent
    window = "30d"

    [delivery_latency]    # scheduled send -> received, over every recipient
    percentile = 99
    threshold_ms = 100

    [connections]         # connections open at once, each still answering a heartbeat
    min = 10000

    [recovery]            # connection lost -> back, re-subscribed, every missed message received
    percentile = 99
    threshold_ms = 2000

A target that a run did not measure is reported as ``not_measured``, never as passed.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from rtbench.histogram import LatencyHistogram
from rtbench.tomlfile import load_toml_struct

Percent = Annotated[float, Meta(gt=0, lt=100)]
Percentile = Annotated[float, Meta(gt=0, le=100)]
PositiveMs = Annotated[float, Meta(gt=0)]

_WINDOW_RE = re.compile(r"^(\d+)(s|m|h|d)$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UptimeTarget(Struct, forbid_unknown_fields=True, kw_only=True):
    objective: Percent = 99.9
    window: str = "30d"

    @property
    def window_seconds(self) -> int:
        return parse_window(self.window)

    @property
    def error_budget(self) -> float:
        """Allowed failing share of intervals, e.g. 0.001 for 99.9 %."""
        return 1.0 - self.objective / 100.0


class LatencyTarget(Struct, forbid_unknown_fields=True, kw_only=True):
    percentile: Percentile = 99.0
    threshold_ms: PositiveMs = 100.0


class ConnectionsTarget(Struct, forbid_unknown_fields=True, kw_only=True):
    min: Annotated[int, Meta(ge=1)] = 10_000


class RecoveryTarget(Struct, forbid_unknown_fields=True, kw_only=True):
    percentile: Percentile = 99.0
    threshold_ms: PositiveMs = 2000.0


class SLO(Struct, forbid_unknown_fields=True, kw_only=True):
    """The four targets. ``SLO()`` is the default set."""

    uptime: UptimeTarget = msgspec.field(default_factory=UptimeTarget)
    delivery_latency: LatencyTarget = msgspec.field(default_factory=LatencyTarget)
    connections: ConnectionsTarget = msgspec.field(default_factory=ConnectionsTarget)
    recovery: RecoveryTarget = msgspec.field(default_factory=RecoveryTarget)


class SLOFileError(ValueError):
    """The SLO file cannot be read or is invalid; the message names the file and the field."""


def parse_window(text: str) -> int:
    """'30d' -> 2592000 seconds. Units: s, m, h, d."""
    match = _WINDOW_RE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise SLOFileError(f"window {text!r} must look like 90s, 15m, 1h or 30d")
    return int(match.group(1)) * _WINDOW_UNITS[match.group(2)]


def load_slo(path: str | Path | None) -> SLO:
    """Read an SLO file; ``None`` gives the defaults. Raises SLOFileError with one clear line."""
    if path is None:
        return SLO()
    slo = load_toml_struct(path, SLO, "SLO file", SLOFileError)
    parse_window(slo.uptime.window)
    return slo


def dump_slo(slo: SLO) -> dict:
    """Plain-dict form, as embedded in results.json."""
    return msgspec.to_builtins(slo)


# ---------------------------------------------------------------------------
# verdicts


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_MEASURED = "not_measured"


class Target(StrEnum):
    UPTIME = "uptime"
    DELIVERY_LATENCY = "delivery_latency"
    CONNECTIONS = "connections"
    RECOVERY = "recovery"


class Verdict(Struct, omit_defaults=True, kw_only=True):
    """One target's verdict for one run (or one monitor window)."""

    target: Target
    status: Status
    objective: str  # human form of the threshold: "p99 < 100 ms"
    measured: float | None = None  # the figure compared with the threshold
    unit: str = ""
    detail: str = ""  # why it passed, failed or was not measured
    trusted: bool = True  # false when the generator was saturated during the run

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL


def _fmt_pct(value: float) -> str:
    return f"p{value:g}"


class Missing(Struct, frozen=True, kw_only=True):
    """How a percentile verdict words the samples that never came (lost deliveries,
    connections that never recovered): ``{missing}``, ``{total}``, ``{share}`` filled."""

    too_many: str  # more missing than the percentile allows
    counted: str  # some missing, counted as the slowest
    none: str | None = None  # nothing arrived at all (None: ``too_many`` says it)
    samples_are_total: bool = True  # "over N ..." counts the missing ones too


class PercentileWords(Struct, frozen=True, kw_only=True):
    """What a percentile target's verdicts say: the samples, nothing measured, missing."""

    noun: str
    nothing: str
    missing: Missing


PERCENTILE_WORDS = {
    Target.DELIVERY_LATENCY: PercentileWords(
        noun="deliveries",
        nothing="no message was delivered during the run",
        missing=Missing(
            too_many="{missing:,} of {total:,} expected deliveries lost ({share:.2f} %)",
            counted="{missing:,} lost counted as slowest",
            none="none of {total:,} expected deliveries arrived",
            samples_are_total=False,
        ),
    ),
    Target.RECOVERY: PercentileWords(
        noun="recoveries",
        nothing="no connection was lost and recovered (use --fault to measure recovery)",
        missing=Missing(
            too_many="{missing:,} of {total:,} lost connections never recovered",
            counted="{missing:,} never recovered (counted slowest)",
        ),
    ),
}
"""The two targets judged as a percentile of samples against a threshold."""


def percentile_target(slo: SLO, target: Target) -> LatencyTarget | RecoveryTarget:
    """The SLO file's percentile and threshold of a percentile target."""
    if target is Target.DELIVERY_LATENCY:
        return slo.delivery_latency
    if target is Target.RECOVERY:
        return slo.recovery
    raise ValueError(f"{target} is not judged as a percentile")


def judge_percentile(slo: SLO, target: Target, measured_ms: float | None, samples: int) -> Verdict:
    """A percentile of samples against a threshold: the rule of delivery latency and of
    recovery (``measured_ms`` None or no samples: not measured)."""
    t = percentile_target(slo, target)
    words = PERCENTILE_WORDS[target]
    objective = f"{_fmt_pct(t.percentile)} < {t.threshold_ms:g} ms"
    if measured_ms is None or samples == 0:
        return Verdict(
            target=target,
            status=Status.NOT_MEASURED,
            objective=objective,
            unit="ms",
            detail=words.nothing,
        )
    return Verdict(
        target=target,
        status=Status.PASS if measured_ms < t.threshold_ms else Status.FAIL,
        objective=objective,
        measured=measured_ms,
        unit="ms",
        detail=f"{_fmt_pct(t.percentile)} over {samples:,} {words.noun}",
    )  # fmt: skip


def judge_with_missing(
    slo: SLO, target: Target, hist: LatencyHistogram | None, missing: int
) -> Verdict:
    """The percentile over every expected sample, a missing one slower than any that came:
    more than ``100 - percentile`` % missing fails whatever the rest did. One rule for
    lost deliveries and for connections that never came back, wherever they are judged
    (a run, a fault run's recoveries, the monitor's recovery verdict)."""
    percentile = percentile_target(slo, target).percentile
    words = PERCENTILE_WORDS[target].missing
    arrived = hist.count if hist is not None else 0
    total = arrived + missing
    if total == 0 or (arrived == 0 and words.none is not None):
        verdict = judge_percentile(slo, target, None, 0)
        if total == 0:
            return verdict
        assert words.none is not None  # total > 0, so the second condition held
        detail = words.none.format(missing=missing, total=total)
        return msgspec.structs.replace(verdict, status=Status.FAIL, detail=detail)
    rank = math.ceil(percentile / 100.0 * total)
    samples = total if words.samples_are_total else arrived
    fill = {"missing": missing, "total": total, "share": 100.0 * missing / total}
    if rank > arrived:
        worst = hist.max_ms() if hist is not None and arrived else None
        verdict = judge_percentile(slo, target, worst, samples)
        return msgspec.structs.replace(
            verdict,
            status=Status.FAIL,
            measured=None,
            detail=(
                f"{words.too_many.format(**fill)}: more than the {100 - percentile:g} % a "
                f"p{percentile:g} target allows"
            ),
        )
    assert hist is not None  # rank >= 1 and rank <= arrived, so something arrived
    measured = hist.percentile_ms(min(100.0, 100.0 * rank / arrived))
    verdict = judge_percentile(slo, target, measured, samples)
    if missing:
        verdict = msgspec.structs.replace(
            verdict, detail=f"{verdict.detail}, {words.counted.format(**fill)}"
        )
    return verdict


def judge_connections(slo: SLO, peak_held: int | None, aimed_for: int | None) -> Verdict:
    """A run that never aimed at the target's count cannot say the service misses it."""
    t = slo.connections
    objective = f">= {t.min:,} held"
    if peak_held is None:
        return Verdict(
            target=Target.CONNECTIONS,
            status=Status.NOT_MEASURED,
            objective=objective,
            unit="connections",
            detail="the run did not count held connections",
        )
    if peak_held >= t.min:
        return Verdict(
            target=Target.CONNECTIONS,
            status=Status.PASS,
            objective=objective,
            measured=float(peak_held),
            unit="connections",
            detail=f"{peak_held:,} held at once, each answering heartbeats",
        )
    if aimed_for is not None and aimed_for < t.min:
        return Verdict(
            target=Target.CONNECTIONS,
            status=Status.NOT_MEASURED,
            objective=objective,
            measured=float(peak_held),
            unit="connections",
            detail=(
                f"the run opened only {aimed_for:,} connections; "
                f"run `rtbench run connect --users {t.min}` to measure this target"
            ),
        )
    return Verdict(
        target=Target.CONNECTIONS,
        status=Status.FAIL,
        objective=objective,
        measured=float(peak_held),
        unit="connections",
        detail=f"only {peak_held:,} of {aimed_for or t.min:,} connections held at once",
    )


def judge_uptime(slo: SLO, good_intervals: int, total_intervals: int, window: str) -> Verdict:
    t = slo.uptime
    objective = f"> {t.objective:g} % over {t.window}"
    if total_intervals == 0:
        return Verdict(
            target=Target.UPTIME,
            status=Status.NOT_MEASURED,
            objective=objective,
            unit="%",
            detail="no probe interval was observed",
        )
    ratio = 100.0 * good_intervals / total_intervals
    return Verdict(
        target=Target.UPTIME,
        status=Status.PASS if ratio > t.objective else Status.FAIL,
        objective=objective,
        measured=ratio,
        unit="%",
        detail=f"{good_intervals:,} of {total_intervals:,} intervals good over {window}",
    )


def _seconds(value: float) -> str:
    """0.12 -> '0.12 s', 600 -> '600 s' (the budget arithmetic's words)."""
    return f"{value:.3g} s" if value < 10 else f"{value:,.0f} s"


def judge_uptime_run(
    slo: SLO, good: int, total: int, interval_s: float, observed_s: float
) -> Verdict:
    """Uptime over one run (``rtbench check``): the run is the window.

    The objective allows ``(1 - objective) x observed_s`` of bad intervals (99.9 % of a
    10-minute run: 0.6 s); each bad probe interval spends ``interval_s`` of it. The
    verdict compares the good share with the objective, and its detail says the
    budget arithmetic in words, so a person sees what an outage cost.
    """
    t = slo.uptime
    objective = f"> {t.objective:g} % of probe intervals over the run"
    base = msgspec.structs.replace(judge_uptime(slo, good, total, "the run"), objective=objective)
    if base.status is Status.NOT_MEASURED:
        return base
    bad = total - good
    allowed_s = (1.0 - t.objective / 100.0) * observed_s
    spent_s = bad * interval_s
    budget = (
        f"at {t.objective:g} % a {_seconds(observed_s)} run allows {_seconds(allowed_s)} "
        f"of bad intervals"
    )
    if bad == 0:
        spent = "none was spent"
    else:
        times = f", {spent_s / allowed_s:.1f} times the budget" if allowed_s > 0 else ""
        intervals = f"{bad:,} bad interval{'s' * (bad != 1)} of {_seconds(interval_s)}"
        spent = f"{intervals} spent {_seconds(spent_s)}{times}"
    detail = f"{good:,} of {total:,} probe intervals good; {budget}; {spent}"
    return msgspec.structs.replace(base, detail=detail)


def bound_percentile(percentile: float) -> float:
    """The percentile of each part of the generator's delay whose sum bounds the whole at
    ``percentile``: p99 -> p99.5 of each (a union bound: each part exceeds its own p99.5
    for at most 0.5 % of messages, so their sum exceeds the two together for at most 1 %)."""
    return 100.0 - (100.0 - percentile) / 2.0


def within_generator_delay(
    verdict: Verdict,
    threshold_ms: float,
    bound_ms: float | None,
    cause: str,
    who: str = "the generator",
) -> Verdict:
    """Judge a failed latency verdict against the generator's own delay at its percentile.

    The generator only adds delay (a late send counts from its scheduled time; a frame
    that waits for a busy or stopped generator is stamped late), so the server's own
    figure lies in ``[measured - bound, measured]``. A pass stays a pass (the truth is no
    slower). A failure that still fails at ``measured - bound`` is the server's, trusted:
    a server's own stall is never excused. One the bound could flip is inconclusive (not
    trusted: exit code 4), saying the figures and the ``cause`` in words. ``who`` names
    the measuring side in them (the monitor's probes: "the monitor").
    """
    if (
        verdict.status is not Status.FAIL
        or verdict.measured is None
        or bound_ms is None
        or not verdict.trusted
    ):
        return verdict
    at = _fmt_pct(percentile_of(verdict))
    low = max(0.0, verdict.measured - bound_ms)
    if low >= threshold_ms:
        return msgspec.structs.replace(
            verdict,
            detail=(
                f"{verdict.detail}; {who}'s own delay, at most {bound_ms:,.1f} ms at "
                f"{at}, does not explain it"
            ),
        )
    return msgspec.structs.replace(
        verdict,
        trusted=False,
        detail=(
            f"inconclusive: {who} itself added up to {bound_ms:,.1f} ms at {at} "
            f"({cause}); the threshold is {threshold_ms:g} ms, and the server's own {at} lies "
            f"between {low:,.1f} and {verdict.measured:,.1f} ms; {verdict.detail}"
        ),
    )


def percentile_of(verdict: Verdict) -> float:
    """The percentile named in an objective like ``p99 < 100 ms``."""
    head = verdict.objective.split(" ", 1)[0]
    return float(head[1:]) if head.startswith("p") else 99.0


def required(verdict: Verdict, why: str) -> Verdict:
    """A check measures all four targets: one it could not measure fails, saying ``why``."""
    if verdict.status is not Status.NOT_MEASURED:
        return verdict
    return msgspec.structs.replace(
        verdict, status=Status.FAIL, detail=f"not measured: {why} ({verdict.detail})"
    )


def untrusted(verdicts: list[Verdict], reason: str) -> list[Verdict]:
    """Mark verdicts of a saturated-generator run: its figures may be the generator's own."""
    return [
        msgspec.structs.replace(v, trusted=False, detail=f"{v.detail}; untrustworthy: {reason}")
        if v.status is not Status.NOT_MEASURED
        else v
        for v in verdicts
    ]


def exit_code_for(verdicts: list[Verdict]) -> int:
    """0 all measured verdicts pass, 1 a trusted verdict fails, 4 only untrusted ones fail."""
    from rtbench.exitcodes import ExitCode

    failed = [v for v in verdicts if v.status is Status.FAIL]
    if not failed:
        return ExitCode.OK
    if any(v.trusted for v in failed):
        return ExitCode.SLO_FAILED
    return ExitCode.INCONCLUSIVE
