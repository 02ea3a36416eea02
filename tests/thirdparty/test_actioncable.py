"""`--protocol actioncable` against a Rails Action Cable test server.

No Rails runs here, so ``actioncable_server`` implements the Rails guide's
``ChatChannel`` over Action Cable's JSON protocol; the frames ``@rails/actioncable``
writes for the guide's examples are checked byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from loadtest.adapters import Delivery, Notice, Ready, Rejected, make_adapter, marker
from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import run, scenario
from tests.thirdparty.conftest import _factory
from tests.thirdparty.docexample import options_block, run_worked_example
from tests.thirdparty.servers import ServerProc
from tests.thirdparty.test_socketio import _exact


@pytest.fixture
def actioncable_server() -> Iterator[Callable[..., ServerProc]]:
    yield from _factory("tests.thirdparty.actioncable_server")


def js(value: object) -> bytes:
    """What ``JSON.stringify`` writes (no spaces), as ``@rails/actioncable`` sends it."""
    return json.dumps(value, separators=(",", ":")).encode()


def test_the_guide_frames_byte_for_byte() -> None:
    """Rails guide: ``consumer.subscriptions.create({ channel: "ChatChannel", room: "Best
    Room" })`` then ``chatChannel.send({ sent_by: "Paul", body: "This is a cool chat app." })``."""
    adapter = make_adapter("actioncable", {"data": {"sent_by": "Paul", "body": "{body}"}})
    identifier = js({"channel": "ChatChannel", "room": "Best Room"}).decode()
    assert adapter.join("Best Room", 1) == js({"command": "subscribe", "identifier": identifier})
    data = js({"sent_by": "Paul", "body": "This is a cool chat app."}).decode()
    assert adapter.send("Best Room", "This is a cool chat app.", 2) == js(
        {"command": "message", "identifier": identifier, "data": data}
    )
    assert adapter.subprotocols == ("actioncable-v1-json", "actioncable-unsupported")
    assert adapter.url("ws://localhost:3000") == "ws://localhost:3000/cable"
    assert adapter.parse(b'{"type":"welcome"}') == Ready()
    confirm = js({"identifier": identifier, "type": "confirm_subscription"})
    assert adapter.parse(confirm) == Ready("Best Room", 0)
    assert isinstance(
        adapter.parse(js({"identifier": identifier, "type": "reject_subscription"})), Rejected
    )
    assert adapter.parse(b'{"type":"ping","message":1700000000}') == Notice("ping")
    text = marker(4, 1, 2, 77)
    broadcast = js({"identifier": identifier, "message": {"sent_by": "Paul", "body": text}})
    assert adapter.parse(broadcast) == Delivery(4, 1, 2, 77, room="Best Room")
    # perform("speak", data): the action goes into the data, after its keys
    speak = make_adapter("actioncable", {"action": "speak"})
    sent = json.loads(speak.send("lobby", "hi", 3))
    assert sent["data"] == '{"body":"hi","action":"speak"}'


def test_the_guide_chat_with_defaults_and_pings(actioncable_server) -> None:  # type: ignore[no-untyped-def]
    server = actioncable_server("--ping", "0.3")
    sc = scenario(
        "chat", server.url, protocol="actioncable", users=24, room_size=4, rate=4, duration=2
    )
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 24 and not t.closes_by_code
    assert t.sent == truth["sends"] > 0
    assert t.expected_deliveries == truth["deliveries"] == t.sent * 3 == t.delivered
    assert t.lost == t.duplicated == t.out_of_order == 0
    assert results.latency["delivery"].count == t.delivered
    assert t.events_by_type["own_message"] == truth["own"] == t.sent
    assert t.events_by_type["ping"] >= 24 * 3  # the server's pings, watched
    assert results.exit_code == ExitCode.OK


def test_faults_counted_exactly_through_perform(actioncable_server) -> None:  # type: ignore[no-untyped-def]
    server = actioncable_server(drop_every=7, dup_every=5, swap_every=11)
    sc = scenario(
        "chat", server.url, protocol="actioncable", protocol_options={"action": "speak"},
        users=16, room_size=4, rate=5, duration=2,
    )  # fmt: skip
    _, results = run(sc)
    truth = server.stats()
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    _exact(results, truth)


def test_a_rejected_subscription_fails_the_connection(actioncable_server) -> None:  # type: ignore[no-untyped-def]
    server = actioncable_server()
    sc = scenario("chat", server.url, protocol="actioncable",
                  protocol_options={"channel": "NoSuchChannel"},
                  users=4, room_size=2, rate=2, duration=1)  # fmt: skip
    _, results = run(sc)
    assert results.totals.failures_by_cause == {"rejected_reject_subscription": 4}
    assert results.exit_code == ExitCode.UNREACHABLE


def test_the_subprotocol_is_what_the_server_wants(actioncable_server) -> None:  # type: ignore[no-untyped-def]
    """A client that offers no Action Cable subprotocol is not served."""
    server = actioncable_server()

    async def bare() -> str:
        try:
            async with connect(f"{server.url}/cable") as ws:
                return str(await asyncio.wait_for(ws.recv(), 5))
        except InvalidStatus as exc:
            return f"http {exc.response.status_code}"

    answer = asyncio.run(bare())
    assert "welcome" not in answer, answer


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('params = { id = "x" }', "protocol_options.params: must hold {room}"),
        ('data = { body = "{bdoy}" }', "protocol_options.data.body: unknown placeholder {bdoy}"),
        ('data = { text = "hello" }', "protocol_options.data: holds no {body}"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, options: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'scenario = "chat"\nprotocol = "actioncable"\n[protocol_options]\n{options}\n')
    done = subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", "run", str(path),
         "--target", "ws://127.0.0.1:9", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_worked_example_in_adapters_md(tmp_path: Path, actioncable_server) -> None:  # type: ignore[no-untyped-def]
    """docs/ADAPTERS.md's options block builds the adapter; its example runs to a verdict."""
    assert options_block("## Rails Action Cable", "actioncable").name == "actioncable"
    server = actioncable_server()
    run_worked_example("## Rails Action Cable", server.url, tmp_path)
