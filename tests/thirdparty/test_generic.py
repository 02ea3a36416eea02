"""`--protocol generic` through the real engine against a plain JSON broadcast server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import run, scenario
from tests.thirdparty.conftest import GENERIC_OPTIONS, PONG_RULE
from tests.thirdparty.test_socketio import _exact


@pytest.mark.parametrize("procs", [1, 2])
def test_exact_accounting_of_faults_with_acks_and_own_echo(json_server, procs: int) -> None:  # type: ignore[no-untyped-def]
    server = json_server("--echo-sender", drop_every=7, dup_every=5, swap_every=11)
    sc = scenario(
        "chat", server.url, protocol="generic", protocol_options=GENERIC_OPTIONS,
        users=16, room_size=4, rate=5, duration=2, procs=procs,
    )  # fmt: skip
    _, results = run(sc)
    truth = server.stats()
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    _exact(results, truth)
    t = results.totals
    assert t.events_by_type["own_message"] == truth["own"] == t.sent
    assert t.acked == t.sent


def test_latency_matches_a_known_delay(json_server) -> None:  # type: ignore[no-untyped-def]
    server = json_server(delay_ms=25)
    sc = scenario(
        "chat", server.url, protocol="generic", protocol_options=GENERIC_OPTIONS,
        users=12, room_size=4, rate=5, duration=2,
    )  # fmt: skip
    _, results = run(sc)
    truth = server.stats()
    assert truth["truth_p50_ms"] >= 25.0 and results.totals.lost == 0
    assert -1.0 < results.latency["delivery"].p50 - truth["truth_p50_ms"] < 5.0


def test_login_welcome_unconfirmed_joins_no_acks_and_field_paths(json_server) -> None:  # type: ignore[no-untyped-def]
    """Another shape of server: a login first, subscribes never confirmed, no acks, and
    deliveries read from separate sender/counter/timestamp fields instead of a marker."""
    server = json_server("--login", "--silent-subscribe", "--no-ack")
    options = {
        "hello": [{"action": "login", "user": "{user}"}],
        "welcome": {"match": {"event": "welcome"}},
        "join": {"action": "subscribe", "channel": "{room}"},
        "send": {
            "action": "publish",
            "channel": "{room}",
            "data": {"from": "{sender}", "n": "{counter}", "at": "{ts}", "text": "hi"},
        },
        "delivery": {
            "match": {"event": "message"},
            "room": "channel",
            "sender": "data.from",
            "counter": "data.n",
            "timestamp": "data.at",
        },
    }
    sc = scenario(
        "chat", server.url, protocol="generic", protocol_options=options,
        users=12, room_size=4, rate=4, duration=1.5,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == 12 and t.acked == 0
    assert t.sent == truth["sends"] and t.expected_deliveries == truth["deliveries"] > 0
    assert t.delivered == t.expected_deliveries and t.lost == 0
    # without the hello the server refuses the subscribes and every send: the error rule
    # counts each refusal by its code
    refused = {k: v for k, v in options.items() if k not in ("hello", "welcome")}
    refused["error"] = {"match": {"event": "error"}, "id": "ref", "code": "code"}
    sc = scenario(
        "chat", server.url, protocol="generic", protocol_options=refused,
        users=4, room_size=2, rate=2, duration=1,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.sent > 0 and t.delivered == 0
    assert t.errors_by_code == {"login_required": t.sent + 4}  # and the 4 subscribes


def test_application_pings_answered_by_a_reply_rule(json_server) -> None:  # type: ignore[no-untyped-def]
    server = json_server("--app-ping", "0.3")
    base = dict(users=8, room_size=4, rate=3, duration=2)
    with_reply = {**GENERIC_OPTIONS, "reply": PONG_RULE}
    _, results = run(
        scenario("chat", server.url, protocol="generic", protocol_options=with_reply, **base)
    )
    assert results.totals.connections_held == 8 and not results.totals.closes_by_code
    assert server.stats()["pongs"] >= 8 * 4
    _, silent = run(
        scenario("chat", server.url, protocol="generic", protocol_options=GENERIC_OPTIONS, **base)
    )
    assert silent.totals.closes_by_code == {"4000": 8}  # the server dropped them: no pong


def test_rtt_and_connect_through_the_echo_frame(json_server) -> None:  # type: ignore[no-untyped-def]
    server = json_server()
    _, rtt = run(
        scenario("rtt", server.url, protocol="generic", protocol_options=GENERIC_OPTIONS,
                 users=3, rate=10, duration=1.5)
    )  # fmt: skip
    assert rtt.totals.sent == rtt.totals.delivered > 0
    _, held = run(
        scenario("connect", server.url, protocol="generic", protocol_options=GENERIC_OPTIONS,
                 users=40, duration=1.5, heartbeat=0.5)
    )  # fmt: skip
    assert held.totals.connections_answering == 40


def test_bad_template_in_a_scenario_file_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'scenario = "chat"\ntarget = "ws://127.0.0.1:9"\nprotocol = "generic"\n'
        "[protocol_options]\n"
        'join = { action = "subscribe", channel = "{room}" }\n'
        'send = { action = "publish", channel = "{room}", text = "{bdoy}" }\n'
        'delivery = { match = { event = "message" }, marker = "text" }\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.strip().splitlines() == [
        "rtbench: protocol_options.send.text: unknown placeholder {bdoy} (this frame may use "
        "{body}, {counter}, {req}, {room}, {sender}, {stream}, {ts})"
    ]
