"""Line charts as inline SVG, rendered in Python.

Why SVG from Python rather than a JavaScript charting library: the report must be
one file that opens offline, in a browser, a CI artifact viewer or a mail client,
and must render with zero console errors. Inline SVG needs no script at all (so
there is no script to fail or to be blocked), adds a few kilobytes per chart
instead of the ~50 KB of a vendored library, prints and zooms crisply, and keeps
every number the reader sees computed by the same Python that judged the run.
Hover tooltips come from SVG ``<title>`` elements, which browsers show natively.

The module knows nothing of rtbench: it draws series of (x, y) points on linear,
logarithmic or "percentile" axes, with reference lines for thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal, Protocol

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
THRESHOLD_COLOR = "#C0392B"

Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    """One line. A ``None`` y leaves a gap: a second with no sample is not a zero."""

    name: str
    points: Sequence[Point]
    color: str
    dashed: bool = False
    tips: Sequence[str] | None = None  # one tooltip per point: draws hoverable dots (short curves)


@dataclass(frozen=True)
class Rule:
    """A reference line across the plot: a threshold, an objective, a percentile."""

    value: float
    label: str
    axis: Literal["x", "y"] = "y"
    color: str = THRESHOLD_COLOR


class Scale(Protocol):
    lo: float
    hi: float

    def frac(self, value: float) -> float:
        """Position of ``value`` along the axis, 0 at ``lo`` and 1 at ``hi``."""
        ...

    def ticks(self) -> list[tuple[float, str]]: ...

    def accepts(self, value: float) -> bool: ...


def format_number(value: float) -> str:
    """Compact tick label: 0.05, 2.5, 120, 1.5k, 12k, 3M."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:g}k"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def _nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(target_ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * power:
            return multiple * power
    return 10 * power


@dataclass
class LinearScale:
    lo: float
    hi: float
    target_ticks: int = 5
    _step: float = field(init=False, default=1.0)

    def __post_init__(self) -> None:
        if not math.isfinite(self.lo) or not math.isfinite(self.hi) or self.hi <= self.lo:
            self.hi = self.lo + 1.0
        self._step = _nice_step(self.hi - self.lo, self.target_ticks)
        # Extend to whole steps so the top gridline carries a label.
        self.lo = math.floor(self.lo / self._step + 1e-9) * self._step
        self.hi = math.ceil(self.hi / self._step - 1e-9) * self._step

    def frac(self, value: float) -> float:
        return (value - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        count = round((self.hi - self.lo) / self._step)
        values = [self.lo + i * self._step for i in range(count + 1)]
        return [(v, format_number(round(v, 10))) for v in values]

    def accepts(self, value: float) -> bool:
        return math.isfinite(value)


@dataclass
class LogScale:
    """Log axis over whole decades: for latencies whose worst case is 100x the median."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        lo = self.lo if self.lo > 0 and math.isfinite(self.lo) else 1e-3
        hi = self.hi if math.isfinite(self.hi) and self.hi > lo else lo * 10
        self.lo = 10 ** math.floor(math.log10(lo))
        self.hi = 10 ** math.ceil(math.log10(hi))
        if self.hi <= self.lo:
            self.hi = self.lo * 10

    def frac(self, value: float) -> float:
        value = max(value, self.lo)
        return (math.log10(value) - math.log10(self.lo)) / (
            math.log10(self.hi) - math.log10(self.lo)
        )

    def ticks(self) -> list[tuple[float, str]]:
        first, last = round(math.log10(self.lo)), round(math.log10(self.hi))
        return [(10.0**e, format_number(10.0**e)) for e in range(first, last + 1)]

    def accepts(self, value: float) -> bool:
        return value > 0 and math.isfinite(value)


def percentile_position(percentile: float) -> float:
    """HdrHistogram's plot axis: 0 % -> 0, 90 % -> 1, 99 % -> 2, 99.9 % -> 3 ..."""
    remaining = max(1.0 - percentile / 100.0, 1e-12)
    return -math.log10(remaining)


@dataclass
class PercentileScale:
    """x axis of an HDR percentile plot: each "nine" gets the same width.

    ``lo``/``hi`` are positions (see ``percentile_position``), not percentiles,
    so that ``frac`` stays linear; ``hi`` is rounded up to a whole nine.
    """

    lo: float = 0.0
    hi: float = 3.0

    def __post_init__(self) -> None:
        self.lo = 0.0
        self.hi = max(1.0, math.ceil(self.hi - 1e-9))

    def frac(self, value: float) -> float:
        return (value - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        labels = []
        for nines in range(round(self.hi) + 1):
            percent = 100.0 * (1.0 - 10.0**-nines)
            labels.append((float(nines), f"{percent:.{max(nines - 2, 0)}f}%"))
        return labels

    def accepts(self, value: float) -> bool:
        return math.isfinite(value)


def auto_scale(values: Sequence[float], *, floor_zero: bool = True, log_span: float = 0) -> Scale:
    """A linear scale over ``values`` (from 0 when ``floor_zero``), or a log scale when the
    positive values span more than ``log_span`` times (0 never switches)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return LinearScale(0.0, 1.0)
    positive = [v for v in finite if v > 0]
    if log_span and positive and max(positive) / min(positive) > log_span:
        return LogScale(min(positive), max(positive))
    lo = min(0.0, min(finite)) if floor_zero else min(finite)
    return LinearScale(lo, max(finite))


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    left: int = 64
    right: int = 18
    top: int = 34
    bottom: int = 44

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def x(self, frac: float) -> float:
        return self.left + min(max(frac, 0.0), 1.0) * self.plot_w

    def y(self, frac: float) -> float:
        return self.top + (1.0 - min(max(frac, 0.0), 1.0)) * self.plot_h


class _Box(Protocol):
    """What ``_path`` needs of a frame (a chart's ``_Frame``, a timeline's ``_LaneFrame``)."""

    def x(self, frac: float) -> float: ...

    def y(self, frac: float) -> float: ...


def _path(points: Sequence[Point], xs: Scale, ys: Scale, frame: _Box) -> tuple[str, int]:
    """SVG path data with a new sub-path after every gap; returns (d, points drawn)."""
    parts: list[str] = []
    pen_down = False
    drawn = 0
    for x, y in points:
        if y is None or not ys.accepts(y) or not xs.accepts(x):
            pen_down = False
            continue
        parts.append(
            f"{'L' if pen_down else 'M'}{frame.x(xs.frac(x)):.1f},{frame.y(ys.frac(y)):.1f}"
        )
        pen_down = True
        drawn += 1
    return "".join(parts), drawn


def line_chart(
    *,
    title: str,
    series: Sequence[Series],
    x_scale: Scale,
    y_scale: Scale,
    x_label: str,
    y_label: str,
    rules: Sequence[Rule] = (),
    width: int = 760,
    height: int = 280,
) -> str:
    """One chart as an ``<svg>`` element (a string of trusted markup; every text is escaped).

    Each series becomes a ``path.series`` carrying ``data-points`` (how many points it
    draws), which is what tests and readers can count on.
    """
    frame = _Frame(width, height)
    out: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<rect class="plot" x="{frame.left}" y="{frame.top}" width="{frame.plot_w:.0f}" '
        f'height="{frame.plot_h:.0f}"/>',
    ]
    for value, label in y_scale.ticks():
        ypos = frame.y(y_scale.frac(value))
        out.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.left + frame.plot_w:.0f}" '
            f'y1="{ypos:.1f}" y2="{ypos:.1f}"/>'
            f'<text class="tick" x="{frame.left - 6}" y="{ypos + 4:.1f}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
    x_ticks = x_scale.ticks()
    for n, (value, label) in enumerate(x_ticks):
        xpos = frame.x(x_scale.frac(value))
        # The last label would overhang the right edge if centred on its tick.
        anchor = "end" if n == len(x_ticks) - 1 and n > 0 else "middle"
        out.append(
            f'<line class="grid" x1="{xpos:.1f}" x2="{xpos:.1f}" y1="{frame.top}" '
            f'y2="{frame.top + frame.plot_h:.0f}"/>'
            f'<text class="tick" x="{xpos:.1f}" y="{frame.top + frame.plot_h + 16:.0f}" '
            f'text-anchor="{anchor}">{escape(label)}</text>'
        )
    out.append(
        f'<text class="axis-label" x="{frame.left + frame.plot_w / 2:.0f}" '
        f'y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-label" transform="translate(14 {frame.top + frame.plot_h / 2:.0f}) '
        f'rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
    )
    for rule in rules:
        out.append(_rule(rule, x_scale, y_scale, frame))
    for s in series:
        d, drawn = _path(s.points, x_scale, y_scale, frame)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(
            f'<path class="series" data-series="{escape(s.name)}" data-points="{drawn}" '
            f'd="{d}" stroke="{s.color}"{dash}><title>{escape(s.name)}</title></path>'
        )
        if s.tips is not None:
            out.append(_markers(s, x_scale, y_scale, frame))
    out.append(_legend(series, frame))
    out.append("</svg>")
    return "".join(out)


def _rule(rule: Rule, xs: Scale, ys: Scale, frame: _Frame) -> str:
    label = escape(rule.label)
    if rule.axis == "y":
        if not ys.accepts(rule.value) or not 0 <= ys.frac(rule.value) <= 1:
            return ""
        ypos = frame.y(ys.frac(rule.value))
        return (
            f'<g class="rule"><line x1="{frame.left}" x2="{frame.left + frame.plot_w:.0f}" '
            f'y1="{ypos:.1f}" y2="{ypos:.1f}" stroke="{rule.color}"/>'
            f'<text x="{frame.left + frame.plot_w - 4:.0f}" y="{ypos - 4:.1f}" '
            f'text-anchor="end" fill="{rule.color}">{label}</text></g>'
        )
    if not xs.accepts(rule.value) or not 0 <= xs.frac(rule.value) <= 1:
        return ""
    xpos = frame.x(xs.frac(rule.value))
    return (
        f'<g class="rule"><line x1="{xpos:.1f}" x2="{xpos:.1f}" y1="{frame.top}" '
        f'y2="{frame.top + frame.plot_h:.0f}" stroke="{rule.color}"/>'
        f'<text x="{xpos + 4:.1f}" y="{frame.top + 12}" fill="{rule.color}">{label}</text></g>'
    )


def _markers(s: Series, xs: Scale, ys: Scale, frame: _Frame) -> str:
    dots = []
    for (x, y), tip in zip(s.points, s.tips or (), strict=True):
        if y is None or not ys.accepts(y) or not xs.accepts(x):
            continue
        dots.append(
            f'<circle cx="{frame.x(xs.frac(x)):.1f}" cy="{frame.y(ys.frac(y)):.1f}" r="2.5">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return f'<g class="markers" fill="{s.color}">{"".join(dots)}</g>'


def _legend(series: Sequence[Series], frame: _Frame) -> str:
    """Series names above the plot; rules carry their own label on the line."""
    items: list[str] = []
    x = float(frame.left)
    for name, color, dashed in ((s.name, s.color, s.dashed) for s in series):
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        items.append(
            f'<line x1="{x:.0f}" x2="{x + 18:.0f}" y1="14" y2="14" stroke="{color}" '
            f'stroke-width="2.5"{dash}/>'
            f'<text class="legend" x="{x + 22:.0f}" y="18">{escape(name)}</text>'
        )
        x += 30 + 6.5 * len(name)
    return f'<g class="legend">{"".join(items)}</g>'


@dataclass(frozen=True)
class Band:
    """A span on the time axis (a phase, a fault) drawn across a lane."""

    start: float
    end: float
    label: str
    color: str


@dataclass(frozen=True)
class Tick:
    """An instant on the time axis (one probe), coloured by its outcome."""

    at: float
    ok: bool
    tip: str


@dataclass(frozen=True)
class Lane:
    """One row of a timeline: bands, ticks, or a line of (t, y) points with its own scale."""

    name: str
    bands: Sequence[Band] = ()
    ticks: Sequence[Tick] = ()
    line: Series | None = None
    y_scale: Scale | None = None


LANE_H = 64
BAR_H = 22
GOOD, BAD = "#009E73", "#C0392B"


def timeline_chart(
    *,
    title: str,
    lanes: Sequence[Lane],
    x_scale: Scale,
    x_label: str,
    marks: Sequence[Rule] = (),
    width: int = 760,
) -> str:
    """Several lanes that share one time axis, so a reader sees what happened when.

    ``marks`` are vertical rules (a fault's start) drawn through every lane.
    """
    left, right, top = 140, 16, 26
    plot_w = width - left - right
    height = top + LANE_H * len(lanes) + 34

    def x(value: float) -> float:
        return left + plot_w * min(1.0, max(0.0, x_scale.frac(value)))

    out = [
        f'<svg class="chart timeline" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for n, lane in enumerate(lanes):
        y0 = top + n * LANE_H
        out.append(
            f'<g class="lane" data-lane="{escape(lane.name)}">'
            f'<rect class="plot" x="{left}" y="{y0 + 4}" width="{plot_w}" height="{LANE_H - 8}"/>'
            f'<text class="axis-label" x="{left - 8}" y="{y0 + LANE_H / 2 + 4:.0f}" '
            f'text-anchor="end">{escape(lane.name)}</text>'
        )
        mid = y0 + (LANE_H - BAR_H) / 2
        for band in lane.bands:
            x1, x2 = x(band.start), x(band.end)
            out.append(
                f'<g class="band" data-band="{escape(band.label)}"><rect x="{x1:.1f}" '
                f'y="{mid:.1f}" width="{max(2.0, x2 - x1):.1f}" height="{BAR_H}" '
                f'fill="{band.color}" fill-opacity="0.35" stroke="{band.color}"/>'
                f"<title>{escape(band.label)}: {band.start:.2f} s to {band.end:.2f} s</title>"
                f'<text class="tick" x="{x1 + 3:.1f}" y="{mid + 15:.1f}">'
                f"{escape(band.label)}</text></g>"
            )
        for tick in lane.ticks:
            color = GOOD if tick.ok else BAD
            grow = 0 if tick.ok else 6  # a failed probe stands out
            out.append(
                f'<line class="probe" data-ok="{str(tick.ok).lower()}" x1="{x(tick.at):.1f}" '
                f'x2="{x(tick.at):.1f}" y1="{mid - grow:.1f}" y2="{mid + BAR_H + grow:.1f}" '
                f'stroke="{color}" stroke-width="{2 if tick.ok else 3}">'
                f"<title>{escape(tick.tip)}</title></line>"
            )
        if lane.line is not None and lane.y_scale is not None:
            frame = _LaneFrame(left, y0 + 8, plot_w, LANE_H - 16, x_scale)
            d, drawn = _path(lane.line.points, x_scale, lane.y_scale, frame)
            top_label = format_number(lane.y_scale.hi)
            out.append(
                f'<path class="series" data-series="{escape(lane.line.name)}" '
                f'data-points="{drawn}" d="{d}" stroke="{lane.line.color}">'
                f"<title>{escape(lane.line.name)}</title></path>"
                f'<text class="tick" x="{left + 4}" y="{y0 + 18}">{escape(top_label)}</text>'
            )
        out.append("</g>")
    bottom = top + LANE_H * len(lanes)
    for mark in marks:
        xpos = x(mark.value)
        out.append(
            f'<g class="rule"><line x1="{xpos:.1f}" x2="{xpos:.1f}" y1="{top}" y2="{bottom}" '
            f'stroke="{mark.color}" stroke-dasharray="4 3"/>'
            f'<text x="{xpos + 4:.1f}" y="{top - 8}" fill="{mark.color}">'
            f"{escape(mark.label)}</text></g>"
        )
    for value, label in x_scale.ticks():
        out.append(
            f'<text class="tick" x="{x(value):.1f}" y="{bottom + 14}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    out.append(
        f'<text class="axis-label" x="{left + plot_w / 2:.0f}" y="{height - 4}" '
        f'text-anchor="middle">{escape(x_label)}</text></svg>'
    )
    return "".join(out)


@dataclass(frozen=True)
class _LaneFrame:
    """The plotting box of one lane, in the shape ``_path`` expects of a frame."""

    left: float
    top: float
    plot_w: float
    plot_h: float
    x_scale: Scale

    def x(self, frac: float) -> float:
        return self.left + self.plot_w * min(max(frac, 0.0), 1.0)

    def y(self, frac: float) -> float:
        return self.top + self.plot_h * (1.0 - min(max(frac, 0.0), 1.0))
