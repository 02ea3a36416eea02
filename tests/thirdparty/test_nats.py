"""`--protocol nats` against a real nats-server's WebSocket listener, started per test.

The server's own counters (``/varz``) are the truth: every message published (``in_msgs``)
and every copy it delivered (``out_msgs``), join confirmations included (one message to
the joining connection's own inbox each).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loadtest.adapters import Delivery, Ready, Rejected, Reply, make_adapter, marker
from loadtest.adapters.nats import PONG
from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from tests.loadtest.conftest import run, scenario
from tests.monitor.conftest import healthz, monitor_config, poll, running
from tests.thirdparty.cli import doc_example, doc_options, rtbench, rtbench_run
from tests.thirdparty.conftest import scenario_toml
from tests.thirdparty.nats_proc import NatsServer, nats_servers


@pytest.fixture
def nats() -> Iterator[Callable[..., NatsServer]]:
    """Factory: ``nats(ping_interval="1s", ping_max=1, token="s3cret")``."""
    yield from nats_servers()


def test_chat_through_rtbench_run_matches_the_servers_counters(nats, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = nats()
    done, results = rtbench_run(
        tmp_path / "out", "chat", "--target", server.url, "--protocol", "nats",
        "--users", "20", "--room-size", "5", "--rate", "4", "--duration", "2", "--ramp", "0.3",
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    t = results.totals
    varz = server.varz()
    assert t.connections_ready == t.connections_held == 20
    assert varz["in_msgs"] == t.sent + 20 > 20  # the sends, and one join confirmation each
    # NATS echoes a message to its publisher too (counted as its own, not expected)
    assert varz["out_msgs"] == t.sent * 5 + 20 and t.events_by_type["own_message"] == t.sent
    assert t.expected_deliveries == t.delivered == t.sent * 4
    assert t.lost == t.duplicated == t.out_of_order == 0 and t.drained
    assert results.latency["delivery"].count == t.delivered


def test_server_pings_are_answered_past_the_stale_connection_limit(nats) -> None:  # type: ignore[no-untyped-def]
    """The server pings every second and drops a client with one ping unanswered: a ~5 s
    run (two workers, a subject prefix) stays connected because of the pongs."""
    server = nats(ping_interval="1s", ping_max=1)
    options = {"subject_prefix": "chat."}
    sc = scenario(
        "chat", server.url, protocol="nats", protocol_options=options,
        users=16, room_size=4, rate=4, duration=3.5, procs=2,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.connections_held == 16 and not t.closes_by_code
    assert t.delivered == t.expected_deliveries == t.sent * 3 > 0 and t.lost == 0
    assert server.varz()["out_msgs"] == t.sent * 4 + 16


def test_a_client_that_does_not_pong_is_dropped(nats) -> None:  # type: ignore[no-untyped-def]
    """What the adapter's pong prevents: the same server drops a silent client."""
    server = nats(ping_interval="1s", ping_max=1)

    async def silent() -> float:
        async with connect(server.url) as ws:
            await ws.send(b'CONNECT {"verbose":false}\r\n')
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:
                        await ws.recv()  # INFO, then PINGs we never answer
            return loop.time() - started

    assert asyncio.run(silent()) < 10


def test_one_frame_carries_several_messages(nats) -> None:  # type: ignore[no-untyped-def]
    """nats-server puts everything pending for a connection into one frame; parse returns
    each message, in order, and the adapter's join is confirmed through its inbox."""
    server = nats()
    adapter = make_adapter("nats")

    async def burst() -> list[list]:
        async with connect(server.url) as rx, connect(server.url) as tx:
            for ws in (rx, tx):
                await ws.send(adapter.open("u", None)[0])
            await rx.send(adapter.join("lobby", 1))
            frames: list[list] = []
            seen: list = []
            async with asyncio.timeout(10):
                while Ready("lobby", 0) not in seen:
                    event = adapter.parse(await rx.recv())
                    seen += event if isinstance(event, list) else [event]
                texts = [marker(1, 0, n, n) for n in range(1, 51)]
                await tx.send(b"".join(adapter.send("lobby", text, 0) for text in texts))
                count = 0
                while count < 50:
                    event = adapter.parse(await rx.recv())
                    events = event if isinstance(event, list) else [event]
                    frames.append(events)
                    count += sum(isinstance(e, Delivery) for e in events)
            return frames

    frames = asyncio.run(burst())
    deliveries = [e for events in frames for e in events if isinstance(e, Delivery)]
    assert [d.counter for d in deliveries] == list(range(1, 51))
    assert all(d.room == "lobby" for d in deliveries)
    assert any(len(events) > 1 for events in frames)  # the coalescing the list exists for


def test_fanout_rtt_and_connect_heartbeats(nats) -> None:  # type: ignore[no-untyped-def]
    """Round trips go through a fresh inbox of the connection's own."""
    server = nats()
    _, fan = run(
        scenario("fanout", server.url, protocol="nats",
                 users=20, room_size=10, publishers=2, rate=5, duration=1.5)
    )  # fmt: skip
    t = fan.totals
    assert t.expected_deliveries == t.sent * 11 == t.delivered > 0 and t.lost == 0
    _, rtt = run(scenario("rtt", server.url, protocol="nats", users=3, rate=10, duration=1.5))
    assert rtt.totals.sent == rtt.totals.delivered == rtt.totals.expected_deliveries > 0
    _, held = run(
        scenario("connect", server.url, protocol="nats", users=40, duration=1.5, heartbeat=0.5)
    )
    assert held.totals.connections_answering == 40


def test_token_in_connect(nats) -> None:  # type: ignore[no-untyped-def]
    server = nats(token="s3cret")
    options = {"connect": {"auth_token": "{token}"}}
    ok = scenario(
        "chat", server.url, protocol="nats", protocol_options=options, token="s3cret",
        users=6, room_size=3, rate=4, duration=1,
    )  # fmt: skip
    _, results = run(ok)
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    refused = scenario(
        "chat", server.url, protocol="nats", protocol_options=options, token="wrong",
        users=6, room_size=3, rate=4, duration=1,
    )  # fmt: skip
    _, results = run(refused)
    assert results.totals.failures_by_cause == {"rejected_authorization_violation": 6}
    assert results.exit_code == ExitCode.UNREACHABLE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"subject_prefix": "chat room."}, "protocol_options.subject_prefix: 'chat room.' is not"),
        ({"connect": {"auth_token": "{tok}"}}, "protocol_options.connect.auth_token: unknown"),
        ({"subjects": "x"}, "protocol_options: Object contains unknown field `subjects`"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(options: dict, message: str, tmp_path: Path) -> None:
    path = scenario_toml(tmp_path / "bad.toml", options, scenario="chat", protocol="nats")
    done = rtbench("run", str(path), "--target", "ws://127.0.0.1:9", "--quiet")
    assert done.returncode == ExitCode.USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_frames_are_the_nats_protocols_commands() -> None:
    """The client protocol's examples (docs.nats.io, "Client Protocol")."""
    adapter = make_adapter("nats")
    opening = adapter.open("u", None)[0]
    assert opening.startswith(b"CONNECT {") and opening.endswith(b"}\r\nPING\r\n")
    assert adapter.send("FOO", "Hello NATS!", 1) == b"PUB FOO 11\r\nHello NATS!\r\n"
    assert adapter.join("FOO", 1).startswith(b"SUB FOO r")
    text = marker(2, 0, 5, 99)
    msg = b"MSG FOO 9 %d\r\n%s\r\n" % (len(text), text.encode())
    assert adapter.parse(msg) == Delivery(2, 0, 5, 99, room="FOO")
    assert adapter.parse(b"PING\r\n") == Reply(PONG)
    assert adapter.parse(b"PONG\r\n") == Ready(None, 0)
    assert adapter.parse(b"-ERR 'Authorization Violation'\r\n") == Rejected(
        None, "authorization_violation", "Authorization Violation"
    )
    with_reply_to = msg.replace(b" 9 ", b" 9 _INBOX.x ")  # MSG <subject> <sid> <reply-to> <n>
    delivery = Delivery(2, 0, 5, 99, room="FOO")
    assert adapter.parse(b"PING\r\n" + msg + with_reply_to) == [Reply(PONG), delivery, delivery]


async def test_monitor_probes_a_nats_server(nats, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The monitor's delivery probes pass and its held connection outlives the server's
    stale-connection limit (pings every second, one missed is fatal)."""
    server = nats(ping_interval="1s", ping_max=1)
    target = TargetConfig(
        url=server.url, name="nats", protocol="nats", health_url="", metrics_url=""
    )  # type: ignore[call-arg]
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:

        async def good() -> dict | None:
            _, doc = await healthz(monitor)
            t = doc["targets"][0]
            window = t["windows"][0]
            return t if window["good"] >= 3 and window["good"] == window["total"] else None

        t = await poll(good, 30, "3 good probe intervals")
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
        await asyncio.sleep(3.0)  # three of the server's ping intervals
        held = monitor.targets[0].held
        assert held is not None and held.connected
        _, doc = await healthz(monitor)
        assert doc["targets"][0]["recovery"]["count"] == 0  # never dropped


def test_nats_under_locust(nats, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Locust users answer the server's pings and split coalesced frames the same way."""
    server = nats(ping_interval="1s", ping_max=1)
    fields = dict(
        scenario="chat", users=12, room_size=4, rate=4.0, ramp=0.5, duration=3.0, drain=4.0,
        seed=5, max_cpu_percent=100.0, max_loop_lag_ms=10000.0, protocol="nats",
    )  # fmt: skip
    path = scenario_toml(tmp_path / "nats.toml", {}, **fields)
    command = [sys.executable, "-c", "from rtbench.entry import run; run()", "locust"]
    command += [str(path), "--headless", "-t", server.url, "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-3000:]
    results = read_results(tmp_path / "out" / "results.json")
    t = results.totals
    assert results.run.engine == "locust"
    assert server.varz()["in_msgs"] == t.sent + 12 > 12
    assert t.expected_deliveries == t.delivered == t.sent * 3 and t.lost == t.duplicated == 0
    assert t.connections_held == 12 and not t.closes_by_code


def test_the_documented_example_runs(nats, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """docs/ADAPTERS.md's NATS example, as written, against a server wanting its token."""
    server = nats(token="s3cret")
    done = rtbench(*doc_example("## NATS over WebSocket", tmp_path, server.url))
    assert done.returncode == ExitCode.OK, done.stderr
    t = read_results(tmp_path / "out" / "results.json").totals
    assert server.varz()["in_msgs"] == t.sent + 20 > 20
    assert t.expected_deliveries == t.delivered == t.sent * 4 and t.lost == t.duplicated == 0


def test_the_documented_options_build_the_adapter() -> None:
    blocks = doc_options("## NATS over WebSocket")
    assert len(blocks) == 2
    for options in blocks:
        assert make_adapter("nats", options).check({"rooms", "ping"}) is None


def test_reconnect_after_a_cut_through_the_shared_client(nats, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every connection reset by the fault proxy 1 s into the sends: the shared client
    reconnects, CONNECTs and subscribes again (core NATS has no resume), and every
    message is still accounted for: delivered, or lost while its recipient was away."""
    server = nats()
    _, results = rtbench_run(
        tmp_path / "out", "chat", "--target", server.url, "--protocol", "nats",
        "--fault", "cut@1s", "--users", "12", "--room-size", "4", "--rate", "4",
        "--duration", "3", "--ramp", "0.3",
    )  # fmt: skip
    t = results.totals
    assert t.reconnects >= 12 and results.latency["recovery"].count >= 12
    assert t.connections_held == 12
    assert t.expected_deliveries == t.delivered + t.lost and t.delivered > 0
    assert t.duplicated == 0
