"""The SVG chart primitives: scales, gaps, escaping."""

import math
import re
from itertools import pairwise

import pytest

from rtbench.report.svg import (
    LinearScale,
    LogScale,
    PercentileScale,
    Rule,
    Series,
    auto_scale,
    line_chart,
    percentile_position,
)


def test_linear_scale_extends_to_whole_nice_steps():
    scale = LinearScale(0, 937)
    ticks = [v for v, _ in scale.ticks()]
    assert ticks[0] == 0 and ticks[-1] >= 937
    steps = {round(b - a, 9) for a, b in pairwise(ticks)}
    assert steps == {200.0}
    assert scale.frac(scale.hi) == pytest.approx(1.0)


def test_linear_scale_survives_a_flat_series():
    scale = LinearScale(5, 5)
    assert scale.hi > scale.lo
    assert 0 <= scale.frac(5) <= 1


def test_log_scale_spans_whole_decades():
    scale = LogScale(0.12, 340)
    assert (scale.lo, scale.hi) == (0.1, 1000)
    assert [label for _, label in scale.ticks()] == ["0.1", "1", "10", "100", "1,000"]
    assert scale.frac(10) == pytest.approx(0.5)
    assert not scale.accepts(0)


def test_percentile_axis_gives_every_nine_the_same_width():
    assert percentile_position(0) == 0
    assert percentile_position(90) == pytest.approx(1)
    assert percentile_position(99) == pytest.approx(2)
    assert percentile_position(99.9) == pytest.approx(3)
    scale = PercentileScale(0, 3.4)
    assert [label for _, label in scale.ticks()] == ["0%", "90%", "99%", "99.9%", "99.99%"]


def test_auto_scale_turns_logarithmic_only_for_wide_spans():
    assert isinstance(auto_scale([1, 2, 3], log_span=50), LinearScale)
    assert isinstance(auto_scale([0.2, 150], log_span=50), LogScale)
    assert isinstance(auto_scale([0.2, 150]), LinearScale)


def test_missing_samples_leave_gaps_not_zeros():
    svg = line_chart(
        title="t",
        series=[Series("s", [(0, 1.0), (1, 2.0), (2, None), (3, 2.0), (4, math.nan)], "#000")],
        x_scale=LinearScale(0, 4),
        y_scale=LinearScale(0, 2),
        x_label="x",
        y_label="y",
    )
    d = re.search(r'data-points="(\d+)" d="([^"]*)"', svg)
    assert d is not None
    assert d.group(1) == "3"
    assert d.group(2).count("M") == 2  # a new sub-path after the gap
    assert d.group(2).count("L") == 1


def test_text_is_escaped_and_rules_outside_the_axis_are_dropped():
    svg = line_chart(
        title="<script>alert(1)</script>",
        series=[Series('a"b<', [(0, 1.0), (1, 2.0)], "#000", tips=["<p1>", "p2"])],
        x_scale=LinearScale(0, 1),
        y_scale=LinearScale(0, 2),
        x_label="x & y",
        y_label="y",
        rules=[Rule(1.5, "inside"), Rule(50, "far above")],
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "x &amp; y" in svg and "&lt;p1&gt;" in svg
    assert "inside" in svg and "far above" not in svg
