"""The scenario flags as Locust arguments, and `rtbench locust`'s checks (no Locust import)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadtest.locust.options import SCENARIO_ARGS, locust_args, resolve, spawn_rate
from loadtest.scenarios import Kind, Scenario, ScenarioError
from rtbench.cli import main
from rtbench.cli.locust import locust_argv, locustfile


def options(**given: object) -> argparse.Namespace:
    """What Locust's parser gives when only ``given`` was on the command line."""
    values: dict[str, object] = {arg.field: None for arg in SCENARIO_ARGS}
    values.update(closed_loop=False, scenario="chat", host=None)
    values.update(given)
    return argparse.Namespace(**values)


def test_locust_options_resolve_to_the_same_scenario_as_rtbench_run() -> None:
    ns = options(host="ws://127.0.0.1:1", room_size="5", rate=2.0, dm_share="0", scenario="chat")
    got = resolve(ns, users=40, procs=2)
    expected = (
        Scenario(scenario=Kind.CHAT)
        .with_overrides(target="ws://127.0.0.1:1", users=40, room_size=5, rate=2.0, dm_share=0.0)
        .with_overrides(procs=2)
        .resolved()
    )
    assert got == expected
    assert got.connections == 40 and got.room_size == 5 and got.dm_share == 0.0


def test_web_form_blanks_take_the_scenario_defaults() -> None:
    got = resolve(options(host="ws://h:1", rate="", ramp=""), users=None, procs=1)
    assert got.rate == 1.0 and got.ramp == 5.0 and got.users == 200


def test_a_scenario_file_is_read_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "fan.toml"
    path.write_text('scenario = "fanout"\nusers = 300\nroom_size = 100\nrate = 4.0\n')
    got = resolve(options(scenario=str(path), host="ws://h:1", rate=7.0), users=None, procs=1)
    assert got.scenario is Kind.FANOUT and got.users == 300 and got.rate == 7.0
    assert got.connections == 303  # one publisher per room of 100
    assert spawn_rate(got) == pytest.approx(303 / 5.0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"host": None}, "no target"),
        ({"host": "http://h:1"}, "must be a ws:// or wss:// URL"),
        ({"host": "ws://h:1", "rate": "fast"}, "--rate 'fast' is not a valid float"),
        ({"host": "ws://h:1", "scenario": "gossip"}, "unknown scenario 'gossip'"),
    ],
)
def test_bad_options_say_what_to_fix(given: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        resolve(options(**given), users=None, procs=1)


def test_flags_map_onto_locusts_own_options() -> None:
    args = locust_args(
        {"target": "ws://h:1", "users": 50, "procs": 2, "room_size": 5, "closed_loop": True,
         "jwt_secret": "s3cret", "slo": "slo.toml", "rate": None}
    )  # fmt: skip
    assert args[:6] == ["-H", "ws://h:1", "-u", "50", "--processes", "2"]
    assert "--room-size" in args and args[args.index("--room-size") + 1] == "5"
    assert "--closed-loop" in args and "--rate" not in args
    assert "s3cret" not in args  # a secret goes through the environment, never argv
    assert args[args.index("--slo") + 1] == "slo.toml"


def test_rtbench_locust_builds_the_locust_command_line() -> None:
    flags = {"scenario": "chat", "target": "ws://127.0.0.1:9", "users": 10, "procs": 1,
             "headless": True, "web_host": "127.0.0.1", "web_port": 8089}  # fmt: skip
    argv = locust_argv(flags, ["--csv", "x"])
    assert argv[1:5] == ["-m", "locust", "-f", str(locustfile())]
    assert locustfile().name == "locustfile.py" and locustfile().exists()
    assert "--headless" in argv and argv[-2:] == ["--csv", "x"]
    assert argv[argv.index("--scenario") + 1] == "chat"
    worker = locust_argv({"worker": True, "master_host": "10.0.0.5", "procs": 4}, [])
    assert worker[5:] == ["--worker", "--master-host", "10.0.0.5", "--processes", "4"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["locust", "chat", "--headless"], "no target"),
        (["locust", "chat", "-t", "ws://h:1", "--rate", "-1"], "invalid scenario option"),
        (["locust", "chat", "-t", "ws://h:1", "--slo", "/nonexistent/slo.toml"], "cannot read SLO"),
        (["locust", "--worker", "chat"], "takes its scenario from the master"),
        (["locust", "rtt", "-t", "ws://h:1", "--protocol", "nosuch"], "unknown protocol"),
    ],
)
def test_rtbench_locust_refuses_bad_input_with_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line


def test_a_fault_scenario_is_refused_not_run_without_its_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faulty.toml"
    path.write_text('scenario = "chat"\nusers = 10\nfaults = ["cut@2s"]\n')
    with pytest.raises(ScenarioError, match="faults and server_cmd are for `rtbench run`"):
        resolve(options(scenario=str(path), host="ws://h:1"), users=None, procs=1)
    assert main(["locust", str(path), "-t", "ws://h:1", "--headless"]) == 2
    err = capsys.readouterr().err
    assert "faults and server_cmd are for `rtbench run`" in err and err.count("\n") == 1
