"""`rtbench compare`: the regression gate on pairs with known differences."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from rtbench.cli import main
from rtbench.exitcodes import ExitCode
from rtbench.report.compare import judge_row, parse_percent
from rtbench.report.metrics import METRICS
from rtbench.results import Totals, write_results
from tests.report.factory import histogram, make_results

BASE_DELIVERY = ((9_800, 2.0), (190, 40.0), (10, 150.0))  # p50 2, p99 40, p99.9 150 ms


def _write(tmp_path: Path, name: str, **kwargs) -> Path:
    kwargs.setdefault("delivery", histogram(*BASE_DELIVERY))
    kwargs.setdefault("recovery", histogram((100, 400.0)))
    return write_results(make_results(**kwargs), tmp_path / f"{name}.json")


def _compare(capsys, *args: str | Path) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _row(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(label))


def test_latency_regression_beyond_allowance_fails(tmp_path, capsys):
    base = _write(tmp_path, "base")
    new = _write(
        tmp_path, "new", delivery=histogram((9_800, 2.5), (190, 40.0), (10, 150.0))
    )  # p50 +25 %
    code, out, err = _compare(capsys, base, new)
    assert code == ExitCode.SLO_FAILED
    assert "REGRESSION" in _row(out, "delivery p50 (ms)") and "+25.0 %" in out
    assert "REGRESSION" not in _row(out, "delivery p99 (ms)")
    assert "1 regression(s) beyond the allowance: delivery p50" in out
    assert err == ""  # same scenario, target and config: nothing to warn about


def test_improvements_pass_in_both_directions(tmp_path, capsys):
    base = _write(tmp_path, "base", peak=900, users=1000)
    faster = histogram((9_800, 1.0), (190, 20.0), (10, 150.0))
    new = _write(
        tmp_path, "new", delivery=faster, peak=1000, users=1000, recovery=histogram((100, 200.0))
    )
    code, out, _ = _compare(capsys, base, new)
    assert code == ExitCode.OK
    assert "improved" in _row(out, "delivery p50")
    assert "improved" in _row(out, "connections held")  # higher is better
    assert "improved" in _row(out, "recovery p99")


def test_throughput_drop_is_a_regression(tmp_path, capsys):
    base = _write(tmp_path, "base")
    new = _write(tmp_path, "new", duration_s=80.0)  # same deliveries over a longer run
    code, out, _ = _compare(capsys, base, new, "--metric", "throughput")
    assert code == ExitCode.SLO_FAILED
    assert "-25.0 %" in _row(out, "throughput") and "REGRESSION" in _row(out, "throughput")


def test_change_within_the_allowance_passes(tmp_path, capsys):
    base = _write(tmp_path, "base")
    new = _write(
        tmp_path, "new", delivery=histogram((9_800, 2.1), (190, 40.0), (10, 150.0))
    )  # +5 %
    code, out, _ = _compare(capsys, base, new)
    assert code == ExitCode.OK
    assert "ok (within allowance)" in _row(out, "delivery p50")
    # The same pair fails a stricter gate.
    code, out, _ = _compare(capsys, base, new, "--max-regression", "2%")
    assert code == ExitCode.SLO_FAILED


def test_per_metric_allowance_and_noise_floor(tmp_path, capsys):
    base = _write(tmp_path, "base")
    new = _write(tmp_path, "new", delivery=histogram((9_800, 2.5), (190, 40.0), (10, 150.0)))
    code, out, _ = _compare(capsys, base, new, "-m", "delivery_p50=30%,delivery_p99")
    assert code == ExitCode.OK and "30 %" in _row(out, "delivery p50")
    code, out, _ = _compare(capsys, base, new, "--min-delta-ms", "1")
    assert code == ExitCode.OK and "noise floor" in _row(out, "delivery p50")


def test_missing_metrics_are_not_comparable_never_passed(tmp_path, capsys):
    base = _write(tmp_path, "base", recovery=None)
    new = _write(tmp_path, "new")
    code, out, _ = _compare(capsys, base, new)
    assert code == ExitCode.OK
    assert "not comparable: not measured in base" in _row(out, "recovery p99")
    assert "1 not comparable" in out


def test_nothing_comparable_refuses_to_pass(tmp_path, capsys):
    base = _write(tmp_path, "base", recovery=None)
    new = _write(tmp_path, "new", recovery=None)
    code, out, _ = _compare(capsys, base, new, "--metric", "recovery_p99")
    assert code == ExitCode.USAGE
    assert "nothing could be compared" in out


def test_different_scenarios_and_targets_warn(tmp_path, capsys):
    base = _write(tmp_path, "base")
    new = _write(tmp_path, "new", scenario="fanout", target="ws://127.0.0.2:9000/ws")
    code, _, err = _compare(capsys, base, new)
    assert code == ExitCode.OK
    assert "different scenarios (base 'chat', new 'fanout')" in err
    assert "different targets" in err


def test_config_and_saturation_differences_warn(tmp_path, capsys):
    base = _write(tmp_path, "base", config={"users": 1000, "rate": 1.0})
    new = _write(tmp_path, "new", config={"users": 2000, "rate": 1.0}, saturated=True)
    _, _, err = _compare(capsys, base, new)
    assert "configurations differ: users 1000 → 2000" in err
    assert "new run's load generator was saturated" in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read results file"),
        ("{not json", "is not JSON"),
        (json.dumps({"hello": 1}), "not an rtbench results file"),
        (
            json.dumps({"schema": "rtbench.results/9"}),
            "this rtbench reads rtbench.results/1 and rtbench.results/2",
        ),
        (json.dumps({"schema": "rtbench.results/1", "run": 3}), "does not match"),
    ],
)
def test_unreadable_input_exits_2_with_one_line(tmp_path, capsys, content, needle):
    base = _write(tmp_path, "base")
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    code, out, err = _compare(capsys, base, bad)
    assert code == ExitCode.USAGE
    assert needle in err and len(err.strip().splitlines()) == 1
    assert out == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-regression", "ten"], "not a percentage"),
        (["--max-regression", "-5%"], "not a percentage"),
        (["--metric", "delivery_p42"], "unknown metric 'delivery_p42'"),
        (["--metric", "throughput=lots"], "not a percentage"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, args, needle):
    base = _write(tmp_path, "base")
    code, _, err = _compare(capsys, base, base, *args)
    assert code == ExitCode.USAGE and needle in err


def test_zero_baseline_is_handled_by_direction():
    loss = METRICS["loss"]
    assert judge_row(loss, 0.0, 0.0, 10).verdict == "unchanged"
    row = judge_row(loss, 0.0, 0.01, 10)
    assert row.verdict == "regression" and row.change_percent == float("inf")
    assert judge_row(METRICS["throughput"], 0.0, 5.0, 10).verdict == "improvement"


def test_parse_percent_forms():
    assert parse_percent("10%") == parse_percent("10") == parse_percent(" 10 % ") == 10.0
    assert parse_percent("2.5%") == 2.5


def test_loss_metric_reads_totals(tmp_path, capsys):
    base = _write(tmp_path, "base")
    results = make_results(delivery=histogram(*BASE_DELIVERY))
    lossy = msgspec.structs.replace(
        results,
        totals=msgspec.structs.replace(results.totals, expected_deliveries=10_010, lost=10),
    )
    new = write_results(lossy, tmp_path / "new.json")
    code, out, _ = _compare(capsys, base, new, "--metric", "loss")
    assert code == ExitCode.SLO_FAILED
    assert re.search(r"lost deliveries \(%\)\s+lower\s+0\s+0\.0999", out)


def test_summary_markdown_and_the_real_command(tmp_path):
    base = _write(tmp_path, "base")
    new = _write(tmp_path, "new", delivery=histogram((9_800, 2.5), (190, 40.0), (10, 150.0)))
    summary = tmp_path / "summary.md"
    rtbench = Path(sys.executable).with_name("rtbench")
    proc = subprocess.run(
        [str(rtbench), "compare", str(base), str(new), "--summary-md", str(summary)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "delivery p50" in proc.stdout
    md = summary.read_text()
    assert md.startswith("### ❌ rtbench compare: 1 regression(s)")
    assert "| delivery p50 (ms) | lower | 2.00 | 2.50 | +25.0 % | 10 % | REGRESSION |" in md


def test_connections_held_is_what_the_verdict_judged():
    results = make_results(users=1_000, peak=950)
    assert METRICS["connections"].read(results) == 950.0
    # Without a connections verdict, the peak stands in; without any attempt, nothing.
    bare = msgspec.structs.replace(
        results, verdicts=[], totals=Totals(connections_attempted=5, peak_connections=4)
    )
    assert METRICS["connections"].read(bare) == 4.0
    assert METRICS["throughput"].read(bare) is None  # nothing was expected to be delivered
    none = msgspec.structs.replace(bare, totals=Totals())
    assert METRICS["connections"].read(none) is None
