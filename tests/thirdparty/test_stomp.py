"""`--protocol stomp`: STOMP 1.2 frames byte for byte (the spec's own examples), then
real runs against RabbitMQ's STOMP-over-WebSocket plugin (``rabbitmq_web_stomp``):
chat, receipts as acks, ERROR frames, heart-beats, and the monitor."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from loadtest.adapters import (
    Ack,
    AdapterError,
    Delivery,
    Notice,
    Ready,
    Rejected,
    make_adapter,
    marker,
)
from loadtest.adapters.stomp import FrameDecoder, StompAdapter, StompFrame, frame
from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import run, scenario
from tests.monitor.conftest import healthz, monitor_config, poll, running
from tests.thirdparty.conftest import scenario_toml
from tests.thirdparty.rabbitmq import (  # noqa: F401
    LENIENT,
    doc_example,
    results_of,
    rtbench,
    run_documented,
    stomp_url,
)

M1 = marker(3, 1, 7, 123_456)


# -- frames, byte for byte -------------------------------------------------------------------


def test_the_specs_example_frames_out() -> None:
    """STOMP 1.2, "Connecting" and "SUBSCRIBE": the examples as printed (^@ is NUL)."""
    assert frame("CONNECT", {"accept-version": "1.2", "host": "stomp.github.org"}) == (
        b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\x00"
    )
    assert frame("SUBSCRIBE", {"id": "0", "destination": "/queue/foo", "ack": "client"}) == (
        b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\x00"
    )
    # header values are escaped in every frame but CONNECT/CONNECTED ("Value Encoding")
    assert frame("SEND", {"note": "a:b\nc\\"}) == b"SEND\nnote:a\\cb\\nc\\\\\n\n\x00"


def test_the_adapters_frames_out() -> None:
    adapter = StompAdapter({"receipts": True}).connection()
    assert adapter.open("u1", None) == [
        b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:10000,10000\n\n\x00"
    ]
    assert adapter.join("lobby", 5) == (
        b"SUBSCRIBE\nid:sub-lobby\ndestination:/topic/lobby\nack:auto\nreceipt:join-lobby\n\n\x00"
    )
    body = M1.encode()
    assert adapter.send("lobby", M1, 9) == (
        b"SEND\ndestination:/topic/lobby\ncontent-type:text/plain\n"
        b"content-length:%d\nreceipt:9\n\n%s\x00" % (len(body), body)
    )
    assert adapter.heartbeat() == b"\n" and adapter.heartbeat_interval_s == 10.0
    login = StompAdapter({"login": "{user}", "passcode": "{token}", "heart_beat": [0, 0]})
    assert login.open("alice", "s3cret") == [
        b"CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\npasscode:s3cret\nheart-beat:0,0\n\n\x00"
    ]
    assert login.heartbeat_interval_s is None


def test_the_specs_example_frames_in() -> None:
    adapter = StompAdapter().connection()
    message = (
        b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\n"
        b"content-type:text/plain\n\nhello queue a\x00"
    )
    assert adapter.parse(message) == Notice("unmarked")  # a message, but no marker in it
    assert adapter.parse(b"RECEIPT\nreceipt-id:message-12345\n\n\x00") == Notice("receipt_unknown")
    assert adapter.parse(b"RECEIPT\nreceipt-id:77\n\n\x00") == Ack(77)
    assert adapter.parse(b"RECEIPT\nreceipt-id:join-lobby\n\n\x00") == Ready("lobby")
    connected = b"CONNECTED\nversion:1.2\nheart-beat:1000,1000\n\n\x00\n"  # as RabbitMQ
    assert adapter.parse(connected) == Ready(None)
    error = (
        b"ERROR\nmessage:Unknown destination\ncontent-type:text/plain\n"
        b"content-length:9\n\nno such d\x00\n"
    )
    assert adapter.parse(error) == Rejected(
        None, "stomp_unknown_destination", "Unknown destination: no such d"
    )


def _message(dest: str, text: str) -> bytes:
    return frame("MESSAGE", {"subscription": "s", "destination": dest}, text.encode())


def test_several_frames_and_heartbeats_in_one_chunk_and_frames_split_across_chunks() -> None:
    m2 = marker(4, 1, 9, 999)
    stream = (
        b"\n"
        + _message("/topic/lobby", M1)
        + b"\n\r\n"
        + _message("/topic/lobby", m2)
        + b"RECEIPT\r\nreceipt-id:12\r\n\r\n\x00"  # CRLF line ends are allowed too
        + b"\n"
    )
    expected = [
        Delivery(3, 1, 7, 123_456, room="lobby"),
        Delivery(4, 1, 9, 999, room="lobby"),
        Ack(12),
    ]
    assert StompAdapter().connection().parse(stream) == expected
    adapter = StompAdapter().connection()
    events: list[object] = []
    for i in range(len(stream)):
        got = adapter.parse(stream[i : i + 1])
        events.extend(got if isinstance(got, list) else [got] if got is not None else [])
    assert events == expected
    assert adapter.parse(b"\n") is None  # a heart-beat means nothing more


def test_content_length_bodies_may_hold_nul_and_headers_are_unescaped() -> None:
    data = b"MESSAGE\nx:a\\cb\\nc\\\\\ncontent-length:3\n\na\x00b\x00"
    assert FrameDecoder().feed(data) == [
        StompFrame("MESSAGE", {"x": "a:b\nc\\", "content-length": "3"}, b"a\x00b")
    ]


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({"destination": "/topic/x"},
         "protocol_options.destination: '/topic/x' must hold {room} once"),
        ({"heart_beat": [1000]},
         "protocol_options.heart_beat: [1000] must be [send ms, receive ms], each >= 0"),
        ({"login": "{usr}"},
         "protocol_options.login: unknown placeholder {usr} (this frame may use "
         "{token}, {user})"),
        ({"receipt": True}, "protocol_options: Object contains unknown field `receipt`"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line(options: dict, line: str) -> None:
    with pytest.raises(AdapterError) as caught:
        make_adapter("stomp", options)
    assert str(caught.value) == line


def test_bad_options_in_a_scenario_file_exit_2_with_one_line(tmp_path: Path) -> None:
    path = scenario_toml(
        tmp_path / "st.toml", {"destination": "/topic/all"}, scenario="chat", protocol="stomp",
        target="ws://127.0.0.1:9/ws",
    )  # fmt: skip
    done = rtbench("run", str(path), "--quiet", timeout=60)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.strip().splitlines() == [
        "rtbench: protocol_options.destination: '/topic/all' must hold {room} once"
    ]


# -- against RabbitMQ ------------------------------------------------------------------------


def test_chat_as_in_the_stompjs_example(stomp_url: str) -> None:  # noqa: F811
    sc = scenario("chat", stomp_url, protocol="stomp", users=24, room_size=6, rate=5, duration=3)
    _, results = run(sc, LENIENT)
    t = results.totals
    assert t.connections_ready == t.connections_held == 24 and not t.closes_by_code
    assert t.sent > 0 and t.expected_deliveries == t.sent * 5
    assert t.delivered == t.expected_deliveries and t.lost == t.duplicated == t.out_of_order == 0
    assert results.latency["delivery"].count == t.delivered
    assert t.events_by_type["own_message"] == t.sent  # a topic subscriber gets its own too
    assert results.exit_code == ExitCode.OK


def test_fanout_with_receipts_as_acks(stomp_url: str) -> None:  # noqa: F811
    sc = scenario(
        "fanout", stomp_url, protocol="stomp", protocol_options={"receipts": True},
        users=30, room_size=10, publishers=1, rate=10, duration=3,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.sent > 0 and t.acked == t.sent and results.latency["ack"].count == t.sent
    assert t.delivered == t.expected_deliveries > 0 and t.lost == t.duplicated == 0


def test_an_error_frame_refuses_the_join(stomp_url: str) -> None:  # noqa: F811
    sc = scenario(
        "chat", stomp_url, protocol="stomp", protocol_options={"destination": "/bogus/{room}"},
        users=4, room_size=2, rate=1, duration=1, connect_timeout=5,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.connections_ready == 0
    assert t.failures_by_cause == {"rejected_stomp_unknown_destination": 4}
    assert t.errors_by_code == {"stomp_unknown_destination": 4}


def test_a_silent_client_is_dropped_by_the_brokers_heartbeat_check(stomp_url: str) -> None:  # noqa: F811
    """What the adapter's EOL heart-beats prevent: RabbitMQ (which rounds up to 1 s) drops a
    client that promised a beat every second and sent none, within a few seconds."""

    async def silent() -> float:
        async with websockets.connect(stomp_url, subprotocols=["v12.stomp"]) as ws:  # type: ignore[list-item]
            await ws.send(b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:1000,0\n\n\x00")
            assert (await ws.recv()).startswith("CONNECTED")
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - started

    assert 1.0 <= asyncio.run(silent()) < 6.0


def test_heartbeats_keep_quiet_connections_alive(stomp_url: str) -> None:  # noqa: F811
    sc = scenario(
        "chat", stomp_url, protocol="stomp", protocol_options={"heart_beat": [1000, 1000]},
        users=12, room_size=4, rate=0.2, duration=5,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.connections_held == 12 and not t.closes_by_code and t.lost == 0


async def test_monitor_probes_a_stomp_broker(stomp_url: str, tmp_path: Path) -> None:  # noqa: F811
    target = TargetConfig(
        url=stomp_url, name="stomp", protocol="stomp", health_url="", metrics_url="",
        room=f"probe-{time.time_ns()}", protocol_options={"heart_beat": [1000, 1000]},
    )  # type: ignore[arg-type]  # fmt: skip
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:

        async def good() -> dict | None:
            _, doc = await healthz(monitor)
            t = doc["targets"][0]
            window = t["windows"][0]
            return t if window["good"] >= 3 and window["good"] == window["total"] else None

        t = await poll(good, 30, "3 good probe intervals")
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
        await asyncio.sleep(3.5)  # past RabbitMQ's heart-beat check: only EOLs keep it open
        assert monitor.targets[0].held is not None and monitor.targets[0].held.connected


def test_the_documented_example_runs_as_written(stomp_url: str, tmp_path: Path) -> None:  # noqa: F811
    toml, command = doc_example("### Worked example: fan-out with receipts")
    name = toml.splitlines()[0].removeprefix("# ")
    (tmp_path / name).write_text(toml)
    done = run_documented(command.replace("ws://127.0.0.1:15674/ws", stomp_url), name, tmp_path)
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-2000:]
    t = results_of(tmp_path / "stomp-run").totals
    assert t.sent > 0 and t.acked == t.sent
    assert t.delivered == t.expected_deliveries > 0 and t.lost == t.duplicated == 0


def test_the_documented_options_build_an_adapter() -> None:
    toml, _ = doc_example("## STOMP (`--protocol stomp`)")
    adapter = make_adapter("stomp", tomllib.loads(toml)["protocol_options"])
    assert adapter.open("alice", "tok")[0].startswith(b"CONNECT\naccept-version:1.2\nhost:/\n")
