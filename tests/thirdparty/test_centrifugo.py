"""`--protocol centrifugo` against a Centrifugo test server (bidirectional JSON protocol).

No Centrifugo runs here, so ``centrifugo_server`` implements the client protocol from
Centrifugo's docs; the documented example frames are checked byte for byte. Resume is
Centrifugo's offset/epoch recovery, exercised by cutting every connection mid-chat.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.adapters import Ack, Delivery, Notice, Ready, Rejected, Reply, make_adapter, marker
from loadtest.judge import build_results
from loadtest.run.entry import run_scenario
from loadtest.scenarios import Kind, Scenario
from rtbench.exitcodes import ExitCode
from rtbench.slo import SLO
from tests.loadtest.conftest import run, scenario
from tests.thirdparty.conftest import _factory
from tests.thirdparty.docexample import options_block, run_worked_example
from tests.thirdparty.servers import ServerProc


@pytest.fixture
def centrifugo_server() -> Iterator[Callable[..., ServerProc]]:
    yield from _factory("tests.thirdparty.centrifugo_server")


def test_documented_frames_byte_for_byte() -> None:
    """centrifugal.dev, "Client protocol": the connect, subscribe, push and ping frames."""
    adapter = make_adapter("centrifugo", {"connect": {"token": "{token}", "name": "js"}})
    (connect,) = adapter.open("u1", "<JWT>")
    assert connect == b'{"id":1,"connect":{"token":"<JWT>","name":"js"}}'
    subscribe = json.loads(adapter.join("chat:42", 5))
    wire = subscribe["id"]  # the adapter's own id (unique across connections), not 2
    assert json.dumps({**subscribe, "id": 2}, separators=(",", ":")) == (
        '{"id":2,"subscribe":{"channel":"chat:42"}}'
    )
    assert adapter.parse(b'{"id":1,"connect":{"client":"e2a1","ping":25,"pong":true}}') == Ready()
    reply = b'{"id":%d,"subscribe":{"recoverable":true,"epoch":"x7","offset":14}}' % wire
    assert adapter.parse(reply) == Ready("chat:42", 14)
    assert adapter.epochs["chat:42"] == "x7"  # kept for the recovery after a reconnect
    push = b'{"push":{"channel":"chat:42","pub":{"data":{"text":"hi"},"offset":15}}}'
    assert adapter.parse(push) == Notice("publication", "chat:42", 15)  # no marker in "hi"
    assert adapter.parse(b"{}") == Reply(b"{}")  # the ping, answered with an empty pong
    # the default publish, its reply, a refusal, and two replies in one frame
    text = marker(1, 0, 3, 42)
    assert adapter.send("lobby", text, 9) == (
        b'{"id":9,"publish":{"channel":"lobby","data":{"input":"%s"}}}' % text.encode()
    )
    assert adapter.parse(b'{"id":9,"publish":{}}') == Ack(9)
    refused = adapter.parse(b'{"id":9,"error":{"code":103,"message":"permission denied"}}')
    assert refused == Rejected(9, "forbidden", "permission denied")
    pub = b'{"push":{"channel":"lobby","pub":{"data":{"input":"%s"},"offset":4}}}' % text.encode()
    assert adapter.parse(b'{"id":9,"publish":{}}\n' + pub) == [
        Ack(9),
        Delivery(1, 0, 3, 42, room="lobby", seq=4),
    ]
    # resume: recover from the last offset seen, with the channel's epoch
    frames = adapter.resume("u1", "<JWT>", {"chat:42": 15})
    assert frames[0] == connect
    sub = json.loads(frames[1])["subscribe"]
    assert sub == {"channel": "chat:42", "recover": True, "offset": 15, "epoch": "x7"}


def test_chat_with_server_pings_answered(centrifugo_server) -> None:  # type: ignore[no-untyped-def]
    """Pings every 0.3 s, a client silent for one is closed: every one must pong."""
    server = centrifugo_server("--ping", "0.3")
    sc = scenario(
        "chat", server.url, protocol="centrifugo", users=24, room_size=4, rate=4, duration=3
    )
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 24 and not t.closes_by_code
    assert t.sent == truth["sends"] > 0 and t.acked == t.sent
    assert t.expected_deliveries == truth["deliveries"] == t.sent * 3 == t.delivered
    assert t.lost == t.duplicated == t.out_of_order == 0
    assert results.latency["delivery"].count == t.delivered
    assert t.events_by_type["own_message"] == t.sent
    assert truth["pongs"] >= 24 * 5 and not truth.get("no_pong")
    assert results.exit_code == ExitCode.OK


def test_faults_counted_exactly(centrifugo_server) -> None:  # type: ignore[no-untyped-def]
    server = centrifugo_server(drop_every=7, dup_every=5, swap_every=11)
    sc = scenario(
        "chat", server.url, protocol="centrifugo", users=16, room_size=4, rate=5, duration=2
    )
    _, results = run(sc)
    truth = server.stats()
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    t = results.totals
    # the offsets give the client its seq dedupe: a duplicate is dropped before the app
    assert t.duplicated == truth["duplicated"] and t.duplicated_after_dedupe == 0
    assert t.lost == truth["dropped"] and t.out_of_order == truth["swapped"]
    assert t.delivered == truth["deliveries"] - truth["dropped"] == t.expected_deliveries - t.lost


def test_jwt_connect_tokens(centrifugo_server) -> None:  # type: ignore[no-untyped-def]
    server = centrifugo_server("--secret", "k3y")
    ok = scenario("chat", server.url, protocol="centrifugo", jwt_secret="k3y",
                  users=6, room_size=3, rate=4, duration=1)  # fmt: skip
    _, results = run(ok)
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    bad = scenario("chat", server.url, protocol="centrifugo", jwt_secret="wrong",
                   users=6, room_size=3, rate=4, duration=1)  # fmt: skip
    _, results = run(bad)
    assert results.totals.failures_by_cause == {"closed_3500": 6}
    assert results.exit_code == ExitCode.UNREACHABLE


def test_recovery_after_a_cut_replays_what_was_missed(centrifugo_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every connection reset mid-chat: each reconnects, recovers from its last offset with
    the channel's epoch, and the replay fills what it missed: nothing lost."""
    server = centrifugo_server()
    sc = Scenario(
        scenario=Kind.CHAT, target=server.url, protocol="centrifugo", users=40, room_size=4,
        rate=4.0, ramp=0.3, duration=4.0, drain=8.0, seed=3, faults=["cut@1.5s"],
    ).resolved()  # fmt: skip
    outcome = asyncio.run(asyncio.wait_for(run_scenario(sc, log_dir=tmp_path), 120))
    results = build_results(outcome, SLO())
    t = results.totals
    (fault,) = [f for f in results.run.faults if "spec" in f]
    assert fault["connections_reset"] == 40 and fault["recovered"] == 40
    assert t.reconnects == 40 and results.latency["recovery"].count == 40
    assert t.expected_deliveries == t.delivered > 0 and t.lost == 0
    assert t.duplicated_after_dedupe == 0
    truth = server.stats()
    assert truth["recovered"] == 40 * 1 and not truth.get("not_recovered")  # one room each
    assert t.events_by_type["recovered"] == 40


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('channel = "chat"', "protocol_options.channel: 'chat' must hold {room}"),
        ('data = { input = "{bdoy}" }', "protocol_options.data.input: unknown placeholder {bdoy}"),
        ("connect = 3", "protocol_options.connect: must be a table"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, options: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'scenario = "chat"\nprotocol = "centrifugo"\n[protocol_options]\n{options}\n')
    done = subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", "run", str(path),
         "--target", "ws://127.0.0.1:9", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_worked_example_in_adapters_md(tmp_path: Path, centrifugo_server) -> None:  # type: ignore[no-untyped-def]
    """docs/ADAPTERS.md's options block builds the adapter; its example runs to a verdict."""
    assert options_block("## Centrifugo (", "centrifugo").name == "centrifugo"
    server = centrifugo_server("--secret", "my-secret")
    run_worked_example("## Centrifugo (", server.url, tmp_path)
