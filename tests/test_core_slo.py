"""The SLO file: defaults, validation errors a person can act on, verdicts and exit codes."""

import pytest

from rtbench.exitcodes import ExitCode
from rtbench.slo import (
    SLO,
    SLOFileError,
    Status,
    exit_code_for,
    judge_connections,
    judge_latency,
    judge_recovery,
    load_slo,
    untrusted,
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
    ok = judge_latency(slo, 12.0, 1000)
    bad = judge_latency(slo, 250.0, 1000)
    assert ok.status is Status.PASS and bad.status is Status.FAIL
    assert judge_recovery(slo, None, 0).status is Status.NOT_MEASURED
    assert exit_code_for([ok, judge_recovery(slo, None, 0)]) == ExitCode.OK
    assert exit_code_for([ok, bad]) == ExitCode.SLO_FAILED
    assert exit_code_for(untrusted([ok, bad], "generator CPU at 100 %")) == ExitCode.INCONCLUSIVE


def test_small_runs_do_not_fail_the_connection_target():
    slo = SLO()
    assert judge_connections(slo, 200, aimed_for=200).status is Status.NOT_MEASURED
    assert judge_connections(slo, 9_000, aimed_for=10_000).status is Status.FAIL
    assert judge_connections(slo, 10_000, aimed_for=10_000).status is Status.PASS
