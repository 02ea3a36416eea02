"""`--protocol phoenix` against a Phoenix Channels test server (V2 JSON serializer).

No Phoenix runs here, so ``phoenix_server`` implements the guide's chat from Phoenix's
docs; the documented example frames are checked byte for byte. The same adapter runs
in the native engine, under Locust and in the monitor, and its client heartbeat
(``Adapter.heartbeat``) keeps each of them connected past the server's idle timeout.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.adapters import Ack, Delivery, Notice, Ready, Rejected, make_adapter, marker
from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from tests.loadtest.conftest import run, scenario
from tests.monitor.conftest import healthz, monitor_config, poll, running
from tests.thirdparty.conftest import _factory, scenario_toml
from tests.thirdparty.docexample import options_block, run_worked_example
from tests.thirdparty.servers import ServerProc
from tests.thirdparty.test_locust import FIELDS, _locust
from tests.thirdparty.test_monitor import _good_probes
from tests.thirdparty.test_socketio import _exact


@pytest.fixture
def phoenix_server() -> Iterator[Callable[..., ServerProc]]:
    yield from _factory("tests.thirdparty.phoenix_server")


def compact(doc: str) -> bytes:
    """A documented JSON frame as a client writes it (no spaces between tokens)."""
    return json.dumps(json.loads(doc), separators=(",", ":")).encode()


def test_documented_frames_byte_for_byte() -> None:
    """ "Writing a Channels Client" (hexdocs.pm/phoenix): the join and heartbeat examples."""
    adapter = make_adapter("phoenix", {"topic": "{room}", "join_payload": {"some": "param"}})
    assert adapter.join("miami:weather", 1) == compact(
        '["0", "0", "miami:weather", "phx_join", {"some": "param"}]'
    )
    adapter.heartbeat()
    assert adapter.heartbeat() == compact('[null, "2", "phoenix", "heartbeat", {}]')
    assert adapter.url("ws://localhost:4000") == "ws://localhost:4000/socket/websocket?vsn=2.0.0"
    # the guide's chat: channel.push("new_msg", {body: ...}) on "room:lobby"
    default = make_adapter("phoenix")
    text = marker(3, 0, 1, 99)
    assert default.send("lobby", text, 7) == compact(
        json.dumps(["0", "7", "room:lobby", "new_msg", {"body": text}])
    )
    assert default.heartbeat_interval_s == 30.0  # phoenix.js heartbeatIntervalMs
    broadcast = json.dumps([None, None, "room:lobby", "new_msg", {"body": text}]).encode()
    assert default.parse(broadcast) == Delivery(3, 0, 1, 99, room="lobby")
    ok = b'["0","0","room:lobby","phx_reply",{"status":"ok","response":{}}]'
    assert default.parse(ok) == Ready("lobby", 0)
    refused = (
        b'["0","0","room:x","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}]'
    )
    assert isinstance(default.parse(refused), Rejected)
    assert default.parse(
        b'["0","7","room:lobby","phx_reply",{"status":"ok","response":{}}]'
    ) == Ack(7, "lobby")
    assert default.parse(
        b'[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]'
    ) == Notice("heartbeat")


def test_the_guide_chat_with_defaults(phoenix_server) -> None:  # type: ignore[no-untyped-def]
    server = phoenix_server()
    sc = scenario("chat", server.url, protocol="phoenix", users=24, room_size=4, rate=4, duration=2)
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 24
    assert t.sent == truth["sends"] > 0
    assert t.expected_deliveries == truth["deliveries"] == t.sent * 3
    assert t.delivered == t.expected_deliveries and t.lost == t.duplicated == t.out_of_order == 0
    assert results.latency["delivery"].count == t.delivered
    assert (
        t.events_by_type["own_message"] == truth["own"] == t.sent
    )  # broadcast! reaches the sender
    assert results.exit_code == ExitCode.OK


def test_faults_counted_exactly_with_push_replies_as_acks(phoenix_server) -> None:  # type: ignore[no-untyped-def]
    server = phoenix_server("--reply", drop_every=7, dup_every=5, swap_every=11)
    sc = scenario(
        "chat", server.url, protocol="phoenix", protocol_options={"ack": True},
        users=16, room_size=4, rate=5, duration=2,
    )  # fmt: skip
    _, results = run(sc)
    truth = server.stats()
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    _exact(results, truth)
    assert results.totals.acked == results.totals.sent
    assert results.latency["ack"].count == results.totals.sent


FANOUT = dict(users=10, room_size=10, publishers=1, rate=2, duration=3)
"""Subscribers that never send: only a heartbeat keeps them from the idle timeout."""


def test_heartbeats_keep_silent_subscribers_past_the_idle_timeout(phoenix_server) -> None:  # type: ignore[no-untyped-def]
    server = phoenix_server("--idle", "1.0")
    sc = scenario("fanout", server.url, protocol="phoenix",
                  protocol_options={"heartbeat_s": 0.3}, **FANOUT)  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.connections_held == 11 and not t.closes_by_code
    assert t.delivered == t.expected_deliveries == t.sent * 10 > 0
    assert server.stats()["heartbeats"] >= 11 * 3 and not server.stats().get("idle_closed")
    # without heartbeats the same server closes the silent subscribers
    quiet = phoenix_server("--idle", "1.0")
    sc = scenario("fanout", quiet.url, protocol="phoenix",
                  protocol_options={"heartbeat_s": 0}, **FANOUT)  # fmt: skip
    _, results = run(sc)
    assert quiet.stats()["idle_closed"] >= 10
    assert results.totals.connections_held < 11


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('topic = "room"', "protocol_options.topic: 'room' must hold {room}"),
        (
            'payload = { text = "{bdoy}" }',
            "protocol_options.payload.text: unknown placeholder {bdoy}",
        ),
        ("heartbeat_s = -1", "protocol_options.heartbeat_s: must be 0 (none) or more seconds"),
        ("colour = 1", "protocol_options: Object contains unknown field `colour`"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, options: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'scenario = "chat"\nprotocol = "phoenix"\n[protocol_options]\n{options}\n')
    done = subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", "run", str(path),
         "--target", "ws://127.0.0.1:9", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_under_locust_with_heartbeats_past_the_idle_timeout(phoenix_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = phoenix_server("--reply", "--idle", "1.0", drop_every=7, dup_every=5)
    options = {"ack": True, "heartbeat_s": 0.3}
    path = scenario_toml(tmp_path / "phx.toml", options, protocol="phoenix", **FIELDS)
    _locust(path, server.url, tmp_path / "out")
    results = read_results(tmp_path / "out" / "results.json")
    truth = server.stats()
    _exact(results, truth)
    assert results.totals.acked == results.totals.sent
    assert results.totals.connections_held == 12 and not results.totals.closes_by_code
    assert truth["heartbeats"] > 0 and not truth.get("idle_closed")


async def test_monitor_probes_and_holds_a_phoenix_target(phoenix_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Delivery probes pass, and the held connection's heartbeat outlives the idle timeout."""
    server = phoenix_server("--idle", "1.0")
    target = TargetConfig(
        url=server.url, name="phoenix", protocol="phoenix", health_url="", metrics_url="",
        protocol_options={"heartbeat_s": 0.3},
    )  # fmt: skip
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:
        t = await _good_probes(monitor, 3)
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
        held = monitor.targets[0].held
        assert held is not None
        await poll(lambda: _true(held.connected), 10, "the held connection up")

        async def idle_passed() -> bool | None:  # several idle timeouts, still one connection
            stats = await asyncio.to_thread(server.stats)
            return True if stats["heartbeats"] >= 8 else None

        await poll(idle_passed, 20, "heartbeats over several idle timeouts")
        assert held.connected
        _, doc = await healthz(monitor)
        assert doc["targets"][0]["recovery"]["count"] == 0
    assert server.stats()["sends"] >= 3


async def _true(value: bool) -> bool | None:
    return True if value else None


def test_worked_example_in_adapters_md(tmp_path: Path, phoenix_server) -> None:  # type: ignore[no-untyped-def]
    """docs/ADAPTERS.md's options block builds the adapter; its example runs to a verdict."""
    assert options_block("## Phoenix Channels", "phoenix").name == "phoenix"
    server = phoenix_server()
    run_worked_example("## Phoenix Channels", server.url, tmp_path)
