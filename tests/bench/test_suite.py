"""Every benchmark of the suite runs at a tiny size, writes its JSON, and renders.

Real parts throughout: the reference server (``rtbench serve``) and the Node ws peer
as subprocesses on loopback, ``rtbench run`` as the load, pytest-benchmark for the
micro-benchmarks. Sizes are tiny, so figures are not asserted, only that each was
measured and accounted for (every delivery counted, nothing lost).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from benchmarks import collected, render, suite
from benchmarks.whose import OWN_KEYS
from rtbench.cli import main

MACRO = ["capacity", "fanout", "latency_load", "chat_10k"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, node: str) -> Path:
    import os

    out = tmp_path_factory.mktemp("bench")
    lock = out / "bench.lock"
    os.environ["RTBENCH_BENCH_LOCK"] = str(lock)  # module scope: monkeypatch is per test
    try:
        entries = suite.select(["micro", *MACRO])
        suite.run_suite(entries, out, quick=True, runs=1, log=print, tiny=True)
    finally:
        del os.environ["RTBENCH_BENCH_LOCK"]
    return out


def _outcome(out: Path, name: str) -> dict[str, Any]:
    data = json.loads((out / f"{name}.json").read_text())
    assert data["status"] == "ok", data["notes"]
    return data


def test_index_and_environment(tiny_run: Path) -> None:
    index = json.loads((tiny_run / "suite.json").read_text())
    assert set(index["benchmarks"]) == {"micro", *MACRO}
    env = index["environment"]
    assert env["cores"] >= 1 and env["python"] and "picows" in env["packages"]
    assert env["ws"] and env["node"].startswith("v")
    assert len(index["load_average_before"]) == 3


def test_capacity_holds_every_connection_on_both_servers(tiny_run: Path) -> None:
    data = _outcome(tiny_run, "capacity")
    assert {r["server"] for r in data["runs"]} == {"reference", "node"}
    for kind in ("reference", "node"):
        s = data["summary"][kind]
        assert s["held"] == s["aimed"] == 60
        assert s["rss_per_conn"] is not None and s["rss_before"] > 0
    assert data["goals"][0]["met"] is None  # 60 connections decide nothing
    assert any("rtbench run connect" in c for c in data["commands"])


def test_fanout_counts_every_delivery_and_server_cpu(tiny_run: Path) -> None:
    data = _outcome(tiny_run, "fanout")
    for run in data["runs"]:
        assert run["delivered"] > 0 and run["lost"] == 0, run
        assert run["server_cpu_s"] is not None and run["server_cpu_s"] > 0
        assert run["p99_ms"] is not None and run["hdr"]
    for room in (100, 1000):
        s = data["summary"][f"room_{room}"]
        assert s["ratio_per_cpu_s"] is not None and s["ratio_per_cpu_s"] > 0
    assert len(data["goals"]) == 2


def test_latency_load_steps_up(tiny_run: Path) -> None:
    data = _outcome(tiny_run, "latency_load")
    for sweep in data["runs"]:
        steps = sweep["steps"]
        assert steps and all(s["lost"] == 0 for s in steps)
        if len(steps) == 2:
            assert steps[1]["msgs_per_s"] > steps[0]["msgs_per_s"]
        for step in steps:  # the generator's own delay bound is read for every step
            assert step["bound_p99_ms"] is not None and step["p99_ms"] is not None
            assert "--procs 2" in step["command"]
            # and the truth probe beside it timed its own messages, none missed
            assert step["truth_p99_ms"] is not None and step["truth_missed"] == 0, step
            # the reference server's own ack time comes from its /metrics; Node has none
            if sweep["server"] == "reference":
                assert step["server_ack_p99_ms"] is not None, step
                assert step["server_ack_floor_ms"] < step["server_ack_p99_ms"], step
                assert step["server_loop_lag_max_ms"] is not None, step
                _stages_read(step)
            else:
                assert step["server_ack_p99_ms"] is None, step
                assert all(step[key] is None for key in OWN_KEYS), step
    summary = data["summary"]
    assert summary["reference"]["curve"] and summary["generator_procs"] == 2
    for kind in ("reference", "node"):
        assert summary[kind]["stopped"]
    assert "Node ws" in data["goals"][0]["goal"]
    _profiled(summary["reference"]["profile"], tiny_run)


def _stages_read(step: dict[str, Any]) -> None:
    """The reference server's ack stages were read around the step, each as the bucket
    holding its p99 (the step's sends were stored: every stage counted some)."""
    for name in ("wait", "commit", "callback"):
        floor, upper = step[f"server_{name}_floor_ms"], step[f"server_{name}_p99_ms"]
        assert upper is not None and floor < upper, (name, step)


def _profiled(profile: dict[str, Any], out: Path) -> None:
    """A server profile of the top step was recorded and summarised by part."""
    assert "error" not in profile, profile
    assert profile["samples"] > 0 and profile["lost"] == 0
    assert set(profile["parts"]) == {
        "fsync/store", "codec", "fan-out", "dispatch/handlers", "event loop/transport", "other"
    }  # fmt: skip
    own = sum(p["own_percent"] for p in profile["parts"].values())
    assert abs(own - 100.0) < 0.5  # every sample's innermost frame is in exactly one part
    loop = profile["threads"]["main (event loop)"]
    assert loop["percent"] > 0 and abs(sum(loop["parts"].values()) - 100.0) < 0.5
    assert profile["top_own"] and profile["top_cumulative"]
    assert Path(profile["raw"]).parent == out / "profiles"


def test_chat_10k_steps_up_and_profiles(tiny_run: Path) -> None:
    data = _outcome(tiny_run, "chat_10k")
    assert [r["run"] for r in data["runs"]] == [1]
    for sweep in data["runs"]:
        steps = sweep["steps"]
        assert steps and all(s["lost"] == 0 and s["connections"] == 40 for s in steps)
        for step in steps:
            assert step["bound_p99_ms"] is not None and step["p99_ms"] is not None
            # the same witnesses as latency_load's: the truth probe and the server's /metrics
            assert step["truth_p99_ms"] is not None and step["truth_missed"] == 0, step
            assert step["server_ack_floor_ms"] < step["server_ack_p99_ms"], step
            assert step["server_loop_lag_max_ms"] is not None, step
            _stages_read(step)
    summary = data["summary"]
    assert summary["curve"] and summary["users"] == 40 and summary["stopped"]
    assert data["goals"][0]["met"] is None  # 40 connections decide nothing
    assert not any("node" in c for c in data["commands"])
    _profiled(summary["profile"], tiny_run)


def test_micro_benchmarks_ran(tiny_run: Path) -> None:
    data = _outcome(tiny_run, "micro")
    names = set(data["summary"])
    for expected in (
        "test_encode_message",
        "test_decode_client_send",
        "test_fanout[room100]",
        "test_fanout[room1000]",
        "test_group_commit[100]",
        "test_record_10k",
        "test_merge",
    ):
        assert expected in names
    assert data["summary"]["test_fanout[room1000]"]["recipients"] == 1000
    assert (tiny_run / "micro-pytest-benchmark.json").exists()


def test_summary_and_charts_render(tiny_run: Path, tmp_path: Path) -> None:
    code = main(["bench", "--render", str(tiny_run)])
    assert code == 0
    text = (tiny_run / "summary.md").read_text()
    for heading in ("## Goals", "## Capacity", "## Fan-out", "## Latency vs load", "## Micro",
                    "## 10,000 connections chatting"):  # fmt: skip
        assert heading in text
    assert text.count("Profile of the reference server at the sweep's top step") == 2
    assert "not for publishing" in text
    # both chat parts say how many generator processes shared the core (the tiny plan: 2)
    assert text.count("the generator in 2 processes on its one core") == 2
    assert render._processes(1) == "one process"
    charts = sorted(tiny_run.glob("bench-*.svg"))
    assert {c.name for c in charts} == {
        "bench-latency-load.svg",
        "bench-fanout-100.svg",
        "bench-fanout-1000.svg",
    }
    for chart in charts:
        root = ET.parse(chart).getroot()  # well-formed, standalone XML
        assert root.tag.endswith("svg")
        assert "<style>" in chart.read_text()
        assert f"]({chart.name})" in text
    index, outcomes = suite.load_outcomes(tiny_run)
    published = render.publish(render.render(index, outcomes, {}), tmp_path / "missing.md")
    assert render.ANALYSIS_MARKER in published


def test_publishing_a_quick_run_is_refused(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--render", str(tiny_run), "--publish"]) == 2
    assert "quick run" in capsys.readouterr().err


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--only", "nope"]) == 2
    assert "unknown benchmark nope" in capsys.readouterr().err
    assert main(["bench", "--render", str(tmp_path)]) == 2
    assert "no benchmark run" in capsys.readouterr().err
    assert main(["bench", "--quick", "--publish"]) == 2
    assert main(["bench", "--list"]) == 0
    assert "transport_choice" in capsys.readouterr().out


def test_collected_script_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        collected.SCRIPTS, "tiny", collected.Script("tests.bench.tiny_script", "tiny script")
    )
    monkeypatch.setitem(
        collected.SCRIPTS, "absent", collected.Script("benchmarks.no_such", "x", needs="issue 99")
    )
    entries = [
        suite.Entry("tiny", "tiny script", lambda ctx: collected.run_script(ctx, "tiny")),
        suite.Entry("absent", "absent", lambda ctx: collected.run_script(ctx, "absent")),
    ]
    # The suite holds the lock while the script takes it again: it must pass through.
    suite.run_suite(entries, tmp_path, quick=True, runs=1, log=print)
    tiny = json.loads((tmp_path / "tiny.json").read_text())
    assert tiny["status"] == "ok"
    assert tiny["summary"]["values"] == 500  # --quick reached the script
    assert "recording 500 values" in (tmp_path / "tiny.log").read_text()
    absent = json.loads((tmp_path / "absent.json").read_text())
    assert absent["status"] == "skipped" and "issue 99" in absent["notes"][0]

    # Running one entry again into the folder keeps the other's figures and says so.
    index = suite.run_suite(entries[:1], tmp_path, quick=True, runs=1, log=print)
    assert set(index["benchmarks"]) == {"tiny", "absent"}
    assert index["reruns"][0]["benchmarks"] == ["tiny"]
    with pytest.raises(suite.MixedRun):
        suite.run_suite(entries[:1], tmp_path, quick=False, runs=1, log=print)


def test_last_json_object() -> None:
    text = 'progress\n{"a": 1}\nmore\n{\n  "b": {"c": [1, 2]}\n}\n'
    assert collected.last_json_object(text) == {"b": {"c": [1, 2]}}
    assert collected.last_json_object("no json here\n{broken\n") is None


def _step(
    p99: float,
    bound: float,
    truth: float | None,
    missed: int = 0,
    own: float | None = None,
    lag: float | None = None,
    floor: float | None = None,
) -> dict[str, Any]:
    return {
        "p99_ms": p99,
        "bound_p99_ms": bound,
        "truth_p99_ms": truth,
        "truth_missed": missed,
        "server_ack_p99_ms": own,
        "server_ack_floor_ms": floor,
        "server_loop_lag_max_ms": lag,
        "generator_saturated": False,
        "generator_core_percent": None,
    }


def test_a_crossing_is_the_servers_only_when_the_truth_probe_agrees() -> None:
    from benchmarks.macro.latency_load import LIMIT_MS
    from benchmarks.whose import generator_bounds as bounds

    def generator_bounds(step: dict[str, Any]) -> str | None:
        return bounds(step, LIMIT_MS)

    # over the limit by more than the generator's stated bound, and the probe saw it too
    assert generator_bounds(_step(169.0, 43.5, 140.0)) is None
    # the stated bound cannot explain it, but the probe beside the load saw 23 ms
    why = generator_bounds(_step(169.0, 43.5, 23.4))
    assert why is not None and "truth probe" in why and "23.4" in why
    # a probe that missed messages proves nothing either way: the server's crossing stands
    assert generator_bounds(_step(169.0, 43.5, 23.4, missed=2)) is None
    # no probe figure (it failed): the stated bound alone decides, as before
    assert generator_bounds(_step(169.0, 43.5, None)) is None
    assert "could explain" in (generator_bounds(_step(120.0, 43.5, None)) or "")
    # at the limit is over it (the crossing is p99 >= 100 ms), and a probe at the limit
    # clears nothing
    assert "could explain" in (generator_bounds(_step(100.0, 43.5, None)) or "")
    assert generator_bounds(_step(169.0, 43.5, 100.0)) is None
    # under the limit the probe changes nothing
    assert generator_bounds(_step(50.0, 10.0, 5.0)) is None
    # the server's own ack p99 (bucket edge) and its worst loop lag stay well under the
    # limit: the rest of the 169 ms was spent outside it
    why = generator_bounds(_step(169.0, 43.5, 140.0, own=20.0, lag=10.0))
    assert why is not None and "own ack time" in why
    # but not when the two together reach the limit
    assert generator_bounds(_step(169.0, 43.5, 140.0, own=100.0, lag=2.0)) is None
    assert generator_bounds(_step(169.0, 43.5, 140.0, own=50.0, lag=60.0)) is None
    assert generator_bounds(_step(169.0, 43.5, 140.0, own=20.0, lag=None)) is None
    # the server's own ack p99 in the 100-200 ms bucket: its crossing, even where the
    # generator's stated bound could have explained the figure
    assert generator_bounds(_step(249.0, 191.7, 124.0, own=200.0, lag=5.0, floor=100.0)) is None
    assert generator_bounds(_step(249.0, 191.7, 124.0)) is not None  # (without it: the bound's)


def test_the_servers_own_ack_p99_is_read_from_its_histogram() -> None:
    from benchmarks.whose import server_ack_p99_ms

    inf = float("inf")
    before = {"buckets": {0.005: 10.0, 0.01: 10.0, 0.02: 10.0, inf: 10.0}}
    # 1,000 acks in the step: 980 within 5 ms, 15 more within 10, 5 more within 20
    after = {"buckets": {0.005: 990.0, 0.01: 1005.0, 0.02: 1010.0, inf: 1010.0}}
    assert server_ack_p99_ms(before, after) == (5.0, 10.0)
    assert server_ack_p99_ms(None, after) is None
    assert server_ack_p99_ms(before, before) is None  # no ack in the step


def test_the_acks_stages_are_read_and_shown_as_their_buckets() -> None:
    from benchmarks.render import _own
    from benchmarks.whose import own_side

    inf = float("inf")

    def scrape(ack: list[float], wait: list[float], commit: list[float], loop: list[float]):
        edges = (0.002, 0.003, 0.005, 0.0075, 0.01, inf)
        hist = [dict(zip(edges, counts, strict=True)) for counts in (ack, wait, commit, loop)]
        stages = {"wait": hist[1], "commit": hist[2], "callback": hist[3]}
        return {"buckets": hist[0], "stages": stages, "loop_lag_max_s": 0.004}

    zero = [0.0] * 6
    before = scrape(zero, zero, zero, zero)
    # 100 acks: 98 within 5 ms, the rest within 7.5; waits 99 within 3 ms; 50 commits,
    # all within 5 ms, one over 3; 50 callbacks, all within 2 ms
    after = scrape(
        [10, 50, 98, 100, 100, 100],
        [90, 99, 100, 100, 100, 100],
        [20, 49, 50, 50, 50, 50],
        [50, 50, 50, 50, 50, 50],
    )
    step: dict[str, Any] = {}
    own_side(step, before, after)
    assert (step["server_ack_floor_ms"], step["server_ack_p99_ms"]) == (5.0, 7.5)
    assert (step["server_wait_floor_ms"], step["server_wait_p99_ms"]) == (2.0, 3.0)
    assert (step["server_commit_floor_ms"], step["server_commit_p99_ms"]) == (3.0, 5.0)
    assert (step["server_callback_floor_ms"], step["server_callback_p99_ms"]) == (0.0, 2.0)
    assert set(OWN_KEYS) <= set(step)
    assert _own(step) == "5-7.5 (wait 2-3, commit 3-5, loop 0-2)"
    # a server without the stages (an older reference server): the ack alone
    older = {"buckets": after["buckets"], "loop_lag_max_s": 0.004}
    step = {}
    own_side(step, {"buckets": before["buckets"], "loop_lag_max_s": 0.0}, older)
    assert step["server_wait_p99_ms"] is None and _own(step) == "5-7.5"
    step = {}
    own_side(step, None, None)  # Node ws: nothing of its own
    assert all(step[key] is None for key in OWN_KEYS) and _own(step) == "-"


def test_several_runs_buckets_are_spanned_not_averaged() -> None:
    from benchmarks.whose import own_envelope

    runs = [
        {"server_ack_floor_ms": 15.0, "server_ack_p99_ms": 20.0, "server_wait_p99_ms": 10.0},
        {"server_ack_floor_ms": 20.0, "server_ack_p99_ms": 50.0, "server_wait_p99_ms": None},
    ]
    both = own_envelope(runs)
    # every run's p99 lies inside; a median of the edges (17.5-35) would be no bucket at all
    assert (both["server_ack_floor_ms"], both["server_ack_p99_ms"]) == (15.0, 50.0)
    assert both["server_wait_p99_ms"] == 10.0 and both["server_commit_p99_ms"] is None
    assert set(both) == set(OWN_KEYS)


def test_a_10k_miss_is_judged_by_the_same_rule_at_10_ms() -> None:
    from benchmarks.macro.chat_10k import goal, miss

    def step(p99: float, bound: float, **more: Any) -> dict[str, Any]:
        return {**_step(p99, bound, None), "lost": 0, **more}

    assert miss(step(9.5, 3.0)) is None  # within 10 ms: passes
    # 22 ms with a stated bound of 8.8: the server's, unless its own figures say otherwise
    assert (miss(step(22.0, 8.8)) or "").startswith("the server's: p99 22.0 ms")
    own = miss(step(22.0, 8.8, server_ack_p99_ms=10.0, server_ack_floor_ms=5.0))
    assert own is not None and own.startswith("the server's") and "own ack p99 5-10 ms" in own
    # its own ack p99 at most 2 ms and its loop never lagged 5 ms: not the server's 22 ms
    cleared = miss(step(22.0, 8.8, server_ack_p99_ms=2.0, server_ack_floor_ms=1.0,
                        server_loop_lag_max_ms=5.0))  # fmt: skip
    assert cleared is not None and cleared.startswith("the generator's") and "own ack" in cleared
    # the probe beside the load saw 6 ms: the generator's
    probe = miss(step(22.0, 8.8, truth_p99_ms=6.0))
    assert probe is not None and probe.startswith("the generator's") and "truth probe" in probe
    # its own ack p99 in the 10-20 ms bucket decides for the server whatever the probe says
    assert (miss(step(22.0, 20.0, truth_p99_ms=6.0, server_ack_p99_ms=20.0,
                      server_ack_floor_ms=10.0)) or "").startswith("the server's")  # fmt: skip
    assert miss(step(5.0, 1.0, lost=3)) == "the server lost 3 deliveries"

    summary = {"highest_rate_per_user": None, "highest_msgs_per_s": None}
    mine = "0.05 msg/s/user missed: " + (cleared or "")
    # a generator's miss whose text names the server's own figures is still the generator's
    assert goal({**summary, "stopped": [mine]}, 10_000).met is None
    theirs = "0.05 msg/s/user missed: " + (own or "")
    assert goal({**summary, "stopped": [theirs]}, 10_000).met is False


def test_the_crossing_goal_is_decided_as_far_as_the_sweeps_know_it() -> None:
    from benchmarks.macro.latency_load import crossing_between, goal

    def sweep(crossing: float | None, under: float | None) -> dict[str, Any]:
        return {"crossing_msgs_per_s": crossing, "highest_under_limit": under}

    def summary(ref: list[dict[str, Any]], node: list[dict[str, Any]]) -> dict[str, Any]:
        def kind(sweeps: list[dict[str, Any]]) -> dict[str, Any]:
            open_ended = [s["highest_under_limit"] for s in sweeps if not s["crossing_msgs_per_s"]]
            return {  # (where the generator ended a sweep: a step above its highest under)
                "crossing_between": crossing_between(sweeps),
                "generator_bound_msgs_per_s": open_ended[0] + 1000 if open_ended else None,
            }

        return {"reference": kind(ref), "node": kind(node)}

    # 2026-12-07's full run: two reference sweeps crossed (5,079 and 6,081), the third was
    # ended by the generator above 6,043; every Node sweep ended by it above 7,996
    ref = [sweep(5079, 4993), sweep(6081, 5977), sweep(None, 6043)]
    node = [sweep(None, 7996)] * 3
    assert crossing_between(ref) == (6043, 6081)  # the median lies between them
    assert crossing_between(node) == (7996, None)
    decided = goal(summary(ref, node))
    assert decided.met is False, decided
    assert "reference 6,043-6,081 msgs/s, Node ws above 7,996 msgs/s" in decided.measured
    # every sweep crossed: the medians decide, either way
    assert crossing_between([sweep(4000, 3000), sweep(5000, 4000), sweep(4500, 4000)]) == (
        4500,
        4500,
    )
    crossed = [sweep(5000, 4000)] * 3
    assert goal(summary(crossed, [sweep(4000, 3000)] * 3)).met is True
    assert goal(summary(crossed, [sweep(6000, 5000)] * 3)).met is False
    # a tie is no earlier
    assert goal(summary(crossed, crossed)).met is True
    # the generator ended every sweep of both: nothing is known past either
    open_ended = goal(summary([sweep(None, 6000)] * 3, [sweep(None, 8000)] * 3))
    assert open_ended.met is None and open_ended.measured == (
        "not decided: median crossing: reference above 6,000 msgs/s, Node ws above 8,000 "
        "msgs/s; the generator bounds reference from 7,000 msgs/s and Node ws from 9,000 msgs/s"
    )
    # the reference's median crossing lies at 7,000-8,000, Node's at 7,500: open
    ref = [sweep(7000, 6000), sweep(8000, 7000), sweep(None, 6000)]
    assert crossing_between(ref) == (7000, 8000)
    assert goal(summary(ref, [sweep(7500, 7000)] * 3)).met is None
    # a sweep with no step under the limit knows nothing below its first step
    assert crossing_between([sweep(None, None)]) == (0.0, None)


def test_the_suite_runs_on_the_client_core_and_gives_its_caller_its_cpus_back(
    tmp_path: Path,
) -> None:
    """The driver keeps off the server core while the benchmarks run, and a caller that
    ran the suite in its own process (as these tests do) is not left on one core."""
    import os

    from benchmarks.procs import Cores

    cores = Cores.detect()
    if cores.client is None:
        pytest.skip("fewer than two usable cores: nothing is pinned")
    before = os.sched_getaffinity(0)
    seen: list[set[int]] = []

    def where(ctx: Any) -> Any:
        seen.append(os.sched_getaffinity(0))
        return suite.Outcome("where", "where the driver ran")

    suite.run_suite([suite.Entry("where", "where", where)], tmp_path, quick=True, runs=1, log=print)
    assert seen == [{cores.client}]
    assert os.sched_getaffinity(0) == before
