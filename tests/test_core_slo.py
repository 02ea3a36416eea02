"""The SLO file: defaults, validation errors a person can act on, verdicts and exit codes."""

import pytest

from rtbench.exitcodes import ExitCode
from rtbench.histogram import LatencyHistogram
from rtbench.slo import (
    SLO,
    LatencyTarget,
    SLOFileError,
    Status,
    Target,
    bound_percentile,
    exit_code_for,
    judge_connections,
    judge_percentile,
    judge_with_missing,
    load_slo,
    untrusted,
    within_generator_delay,
)


def test_defaults_are_the_four_promises():
    slo = SLO()
    assert slo.uptime.objective == 99.9
    assert (slo.delivery_latency.percentile, slo.delivery_latency.threshold_ms) == (99, 100)
    assert slo.connections.min == 10_000
    assert (slo.recovery.percentile, slo.recovery.threshold_ms) == (99, 2000)


def test_partial_file_keeps_other_defaults(tmp_path):
    path = tmp_path / "slo.toml"
    path.write_text("[delivery_latency]\npercentile = 99.9\nthreshold_ms = 50\n")
    slo = load_slo(path)
    assert slo.delivery_latency.threshold_ms == 50
    assert slo.recovery.threshold_ms == 2000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[delivery_latency]\nthreshold_ms = -5\n", "threshold_ms"),
        ("[latency]\nthreshold_ms = 5\n", "latency"),
        ("[uptime]\nwindow = 'forever'\n", "window"),
        ("not = [toml", "TOML"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "slo.toml"
    path.write_text(text)
    with pytest.raises(SLOFileError) as caught:
        load_slo(path)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(SLOFileError, match="cannot read SLO file"):
        load_slo(tmp_path / "nope.toml")


def test_verdicts_and_exit_codes():
    slo = SLO()
    ok = judge_percentile(slo, Target.DELIVERY_LATENCY, 12.0, 1000)
    bad = judge_percentile(slo, Target.DELIVERY_LATENCY, 250.0, 1000)
    assert ok.status is Status.PASS and bad.status is Status.FAIL
    assert judge_percentile(slo, Target.RECOVERY, None, 0).status is Status.NOT_MEASURED
    assert exit_code_for([ok, judge_percentile(slo, Target.RECOVERY, None, 0)]) == ExitCode.OK
    assert exit_code_for([ok, bad]) == ExitCode.SLO_FAILED
    assert exit_code_for(untrusted([ok, bad], "generator CPU at 100 %")) == ExitCode.INCONCLUSIVE


def test_small_runs_do_not_fail_the_connection_target():
    slo = SLO()
    assert judge_connections(slo, 200, aimed_for=200).status is Status.NOT_MEASURED
    assert judge_connections(slo, 9_000, aimed_for=10_000).status is Status.FAIL
    assert judge_connections(slo, 10_000, aimed_for=10_000).status is Status.PASS


def test_a_failure_the_generators_own_delay_could_flip_is_inconclusive():
    """The server's own p99 lies in [measured - bound, measured]: a pass stays a pass, a
    failure even at the low end is the server's (trusted), and one in between is
    inconclusive with the figures and the cause in words (exit code 4)."""
    slo = SLO(delivery_latency=LatencyTarget(threshold_ms=20))
    hog = "another process on its core"
    passed = within_generator_delay(
        judge_percentile(slo, Target.DELIVERY_LATENCY, 12.0, 1000), 20, 11.0, hog
    )
    assert passed.status is Status.PASS and passed.trusted
    failed = judge_percentile(slo, Target.DELIVERY_LATENCY, 42.0, 1000)
    server = within_generator_delay(failed, 20, 15.0, hog)
    assert server.status is Status.FAIL and server.trusted
    assert "at most 15.0 ms at p99, does not explain it" in server.detail
    unsure = within_generator_delay(failed, 20, 31.0, hog)
    assert unsure.status is Status.FAIL and not unsure.trusted
    assert unsure.detail.startswith(
        "inconclusive: the generator itself added up to 31.0 ms at p99 (another process on "
        "its core); the threshold is 20 ms, and the server's own p99 lies between 11.0 and "
        "42.0 ms"
    )
    assert exit_code_for([passed, unsure]) == ExitCode.INCONCLUSIVE
    assert exit_code_for([passed, server, unsure]) == ExitCode.SLO_FAILED
    assert within_generator_delay(failed, 20, None, hog) is failed  # nothing measured
    assert bound_percentile(99) == 99.5 and bound_percentile(99.9) == pytest.approx(99.95)


def test_uptime_over_a_run_says_the_budget_in_words():
    """The check's window is the run: 99.9 % of 120 s allows 0.12 s of bad intervals."""
    from rtbench.slo import judge_uptime_run

    slo = SLO()
    failed = judge_uptime_run(slo, 119, 120, 1.0, 120.0)
    assert failed.status is Status.FAIL and failed.measured == pytest.approx(99.1667, rel=1e-4)
    assert failed.detail == (
        "119 of 120 probe intervals good; at 99.9 % a 120 s run allows 0.12 s of bad "
        "intervals; 1 bad interval of 1 s spent 1 s, 8.3 times the budget"
    )
    kept = judge_uptime_run(slo, 600, 600, 1.0, 600.0)
    assert kept.status is Status.PASS and kept.detail.endswith(
        "allows 0.6 s of bad intervals; none was spent"
    )
    assert judge_uptime_run(slo, 0, 0, 1.0, 0.0).status is Status.NOT_MEASURED


@pytest.mark.parametrize("target", [Target.DELIVERY_LATENCY, Target.RECOVERY])
def test_a_missing_sample_counts_as_the_slowest_for_either_percentile_target(target):
    """One rule for lost deliveries and connections that never came back: at p99, 10 of
    1,000 missing still passes on the slowest that came; 11 of 1,001 is more than the
    1 % a p99 allows and fails whatever the rest did."""
    slo = SLO()
    hist = LatencyHistogram()
    hist.record_many_us([1_000] * 990)  # 1 ms each
    within = judge_with_missing(slo, target, hist, 10)
    assert within.status is Status.PASS and within.measured == pytest.approx(1.0, rel=0.01)
    assert "counted" in within.detail and "10" in within.detail
    beyond = judge_with_missing(slo, target, hist, 11)
    assert beyond.status is Status.FAIL and beyond.measured is None
    assert "more than the 1 % a p99 target allows" in beyond.detail
    assert judge_with_missing(slo, target, None, 0).status is Status.NOT_MEASURED
    assert judge_with_missing(slo, target, None, 3).status is Status.FAIL


def test_only_the_latency_targets_are_judged_as_a_percentile():
    with pytest.raises(ValueError, match="not judged as a percentile"):
        judge_percentile(SLO(), Target.UPTIME, 1.0, 1)
