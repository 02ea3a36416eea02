"""`--protocol pusher` against a Pusher Channels protocol test server (Soketi's defaults).

No Pusher-compatible server installs here, so ``pusher_server`` implements protocol 7
from Pusher's docs; the documented auth signature and frames are checked byte for byte.
A private channel's subscribe carries the connection's ``socket_id`` signed with the app
secret: the welcome's ``Ready.session``, which every driver hands to ``join_in``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.adapters import Delivery, Ready, Rejected, Reply, make_adapter, marker
from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import run, scenario
from tests.monitor.conftest import monitor_config, running
from tests.thirdparty.conftest import _factory
from tests.thirdparty.docexample import options_block, run_worked_example
from tests.thirdparty.servers import ServerProc
from tests.thirdparty.test_monitor import _good_probes
from tests.thirdparty.test_socketio import _exact

DOC_APP = {"key": "278d425bdf160c739803", "secret": "7ad3773142a6692b25b8"}
"""The app of Pusher's "Authenticating users" docs (key, secret) and their example."""


@pytest.fixture
def pusher_server() -> Iterator[Callable[..., ServerProc]]:
    yield from _factory("tests.thirdparty.pusher_server")


def test_documented_signature_and_frames_byte_for_byte() -> None:
    adapter = make_adapter("pusher", DOC_APP)
    frame = json.loads(adapter.join_in("1234.1234", "foobar", 1))
    assert frame == {
        "event": "pusher:subscribe",
        "data": {
            "auth": "278d425bdf160c739803:"
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
            "channel": "private-foobar",
        },
    }
    assert adapter.url("ws://127.0.0.1:6001") == (
        "ws://127.0.0.1:6001/app/278d425bdf160c739803?protocol=7&client=js&version=8.4.0&flash=false"
    )
    info = '{"socket_id":"123.456","activity_timeout":120}'  # data: a JSON text
    welcome = json.dumps({"event": "pusher:connection_established", "data": info}).encode()
    assert adapter.parse(welcome) == Ready(None, 0, session="123.456")
    ok = (
        b'{"event":"pusher_internal:subscription_succeeded","channel":"private-foobar","data":"{}"}'
    )
    assert adapter.parse(ok) == Ready("foobar", 0)
    assert adapter.parse(b'{"event":"pusher:ping","data":{}}') == Reply(
        b'{"event":"pusher:pong","data":{}}'
    )
    assert adapter.heartbeat() == b'{"event":"pusher:ping","data":{}}'
    refused = b'{"event":"pusher:error","data":{"code":4009,"message":"Connection not authorized"}}'
    assert adapter.parse(refused) == Rejected(None, "4009", "Connection not authorized")
    text = marker(2, 0, 5, 11)
    sent = adapter.send("foobar", text, 3)
    assert sent == b'{"event":"client-message","channel":"private-foobar","data":{"body":"%s"}}' % (
        text.encode()
    )
    assert adapter.parse(sent) == Delivery(2, 0, 5, 11, room="foobar")  # relayed unchanged
    # an HTTP-API-triggered event carries its data as JSON text: read the same
    relayed = json.dumps({"event": "client-message", "channel": "private-foobar",
                          "data": json.dumps({"body": text})}).encode()  # fmt: skip
    assert adapter.parse(relayed) == Delivery(2, 0, 5, 11, room="foobar")
    # presence: channel_data signed too
    presence = make_adapter("pusher", {**DOC_APP, "channel": "presence-{room}"})
    data = json.loads(presence.join_in("1234.1234", "foobar", 1))["data"]
    assert data["channel_data"] == '{"user_id":"1234.1234","user_info":{}}'


def test_private_channel_chat_with_soketi_defaults(pusher_server) -> None:  # type: ignore[no-untyped-def]
    server = pusher_server()
    sc = scenario("chat", server.url, protocol="pusher", users=24, room_size=4, rate=4, duration=2)
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 24 and not t.failures_by_cause
    assert t.sent == truth["sends"] > 0 and not truth.get("auth_errors")
    assert t.expected_deliveries == truth["deliveries"] == t.sent * 3 == t.delivered
    assert t.lost == t.duplicated == t.out_of_order == 0
    assert results.latency["delivery"].count == t.delivered
    assert results.exit_code == ExitCode.OK


def test_faults_counted_exactly(pusher_server) -> None:  # type: ignore[no-untyped-def]
    server = pusher_server(drop_every=7, dup_every=5, swap_every=11)
    sc = scenario("chat", server.url, protocol="pusher", users=16, room_size=4, rate=5, duration=2)
    _, results = run(sc)
    truth = server.stats()
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    _exact(results, truth)


def test_a_wrong_secret_is_refused_at_subscribe(pusher_server) -> None:  # type: ignore[no-untyped-def]
    server = pusher_server()
    sc = scenario("chat", server.url, protocol="pusher", protocol_options={"secret": "nope"},
                  users=4, room_size=2, rate=2, duration=1)  # fmt: skip
    _, results = run(sc)
    assert results.totals.failures_by_cause == {"rejected_AuthError": 4}
    assert server.stats()["auth_errors"] == 4


def test_client_pings_keep_silent_subscribers_past_the_activity_timeout(pusher_server) -> None:  # type: ignore[no-untyped-def]
    """Fanout subscribers never send: the server pings them after 0.5 s of silence and
    closes them 0.3 s later unless they answer; the adapter's own pings keep them quiet."""
    fanout = dict(users=10, room_size=10, publishers=1, rate=2, duration=3)
    server = pusher_server("--activity-timeout", "0.5", "--pong-wait", "0.3")
    sc = scenario("fanout", server.url, protocol="pusher",
                  protocol_options={"activity_timeout_s": 0.2}, **fanout)  # fmt: skip
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_held == 11 and not t.closes_by_code
    assert t.delivered == t.expected_deliveries == t.sent * 10 > 0
    assert truth["client_pings"] >= 11 * 5 and not truth.get("closed_4201")
    # without our pings the server's pings are still answered (pusher:pong): kept alive too
    server2 = pusher_server("--activity-timeout", "0.5", "--pong-wait", "0.3")
    sc = scenario("fanout", server2.url, protocol="pusher",
                  protocol_options={"activity_timeout_s": 0}, **fanout)  # fmt: skip
    _, results = run(sc)
    truth = server2.stats()
    assert results.totals.connections_held == 11 and not results.totals.closes_by_code
    assert truth["server_pings"] >= 10 and not truth.get("closed_4201")
    # every ping answered, but for at most one per connection still in flight when the run
    # closed it (a ping the server wrote as the client said goodbye)
    assert truth["server_pings"] - 11 <= truth["pongs"] <= truth["server_pings"]


async def test_monitor_probes_a_pusher_target(pusher_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = pusher_server()
    target = TargetConfig(url=server.url, name="pusher", protocol="pusher",
                          health_url="", metrics_url="")  # fmt: skip
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:
        t = await _good_probes(monitor, 3)
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
    assert server.stats()["sends"] >= 3


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('channel = "public-{room}"', "client events need a private- or presence- channel"),
        (
            'event = "message"',
            "protocol_options.event: 'message': client events start with client-",
        ),
        ('data = { body = "{bdoy}" }', "protocol_options.data.body: unknown placeholder {bdoy}"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, options: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'scenario = "chat"\nprotocol = "pusher"\n[protocol_options]\n{options}\n')
    done = subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", "run", str(path),
         "--target", "ws://127.0.0.1:9", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_worked_example_in_adapters_md(tmp_path: Path, pusher_server) -> None:  # type: ignore[no-untyped-def]
    """docs/ADAPTERS.md's options block builds the adapter; its example runs to a verdict."""
    assert options_block("## Pusher Channels", "pusher").name == "pusher"
    server = pusher_server()
    run_worked_example("## Pusher Channels", server.url, tmp_path)
