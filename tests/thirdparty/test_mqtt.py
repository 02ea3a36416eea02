"""`--protocol mqtt`: the packet codec byte for byte, then real runs against real brokers:
MQTT 3.1.1 against RabbitMQ's MQTT-over-WebSocket plugin (``rabbitmq_web_mqtt``, which
speaks only 3.1.1 before 3.13), MQTT 5 against a Mosquitto of the test's own behind a
WebSocket bridge (``tests/thirdparty/mosquitto.py``): QoS 0 and 1, keepalive, a persistent
session resumed after every connection is cut, Locust and the monitor."""

from __future__ import annotations

import asyncio
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from loadtest.adapters import (
    Ack,
    AdapterError,
    Delivery,
    Feature,
    Notice,
    Ready,
    Rejected,
    Reply,
    make_adapter,
    marker,
)
from loadtest.adapters.mqtt import (
    PINGREQ_PACKET,
    VERSIONS,
    MqttAdapter,
    StreamDecoder,
    connect_packet,
    packet,
    publish_packet,
    subscribe_packet,
    utf8,
    varint,
)
from loadtest.client.policy import ReconnectPolicy
from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import run, scenario
from tests.monitor.conftest import healthz, monitor_config, poll, running
from tests.thirdparty.conftest import scenario_toml
from tests.thirdparty.mosquitto import MqttBroker, mosquitto_broker
from tests.thirdparty.rabbitmq import (  # noqa: F401
    LENIENT,
    client_prefix,
    doc_example,
    lenient_slo,
    mqtt_url,
    new_sessions_ended,
    results_of,
    rtbench,
    run_documented,
)

M1 = marker(3, 1, 7, 123_456)
M2 = marker(4, 1, 9, 123_999)


# -- the codec, byte for byte ------------------------------------------------------------


def test_variable_byte_integers_as_in_the_spec_table() -> None:
    """MQTT 3.1.1 table 2.4 / MQTT 5.0 section 1.5.5: the edges of 1 to 4 bytes."""
    cases = {
        0: "00", 127: "7f", 128: "8001", 16_383: "ff7f", 16_384: "808001",
        2_097_151: "ffff7f", 2_097_152: "80808001", 268_435_455: "ffffff7f",
    }  # fmt: skip
    for value, hex_ in cases.items():
        assert varint(value).hex() == hex_


def test_packets_out_byte_for_byte() -> None:
    # CONNECT 3.1.1, clean session, keepalive 60, client id "rtb" (spec 3.1)
    assert connect_packet(4, "rtb", 60, clean=True).hex() == (
        "100f" "00044d515454" "04" "02" "003c" "0003727462"
    )  # fmt: skip
    # with a username and password (flags 0xc2)
    assert connect_packet(4, "c", 10, True, "u", "p").hex() == (
        "1013" "00044d515454" "04" "c2" "000a" "000163" "000175" "000170"
    )  # fmt: skip
    # MQTT 5, clean start off, Session Expiry Interval 3600 (property 0x11, 4 bytes)
    assert connect_packet(5, "rtb", 60, False, session_expiry=3600).hex() == (
        "1015" "00044d515454" "05" "00" "003c" "05" "1100000e10" "0003727462"
    )  # fmt: skip
    # SUBSCRIBE: fixed header 0x82, packet id 10, "a/b" at QoS 1 (v5: empty properties)
    assert subscribe_packet(4, 10, ["a/b"], 1).hex() == "8208000a0003612f6201"
    assert subscribe_packet(5, 10, ["a/b"], 1).hex() == "8209000a000003612f6201"
    # PUBLISH QoS 0 (no packet id) and QoS 1 (id 5), topic "t"
    assert publish_packet(4, "t", b"hi", 0, 0).hex() == "30050001746869"
    assert publish_packet(4, "t", b"hi", 1, 5).hex() == "320700017400056869"
    assert publish_packet(5, "t", b"hi", 1, 5).hex() == "32080001740005006869"
    assert PINGREQ_PACKET.hex() == "c000"


def _stream(level: int) -> bytes:
    """What a broker might write in one go: CONNACK, SUBACK, two PUBLISHes, PINGRESP."""
    props = b"\x00" if level == 5 else b""
    connack = packet(0x20, b"\x00\x00" + props)
    suback = packet(0x90, (7).to_bytes(2, "big") + props + b"\x01")
    # a v5 PUBLISH with a property (Message Expiry Interval 0x02) the adapter skips
    pub_props = bytes((5, 0x02, 0, 0, 0, 60)) if level == 5 else b""
    pub0 = packet(0x30, utf8("room1") + pub_props + M1.encode())
    pub1 = packet(0x32, utf8("room1") + (300).to_bytes(2, "big") + pub_props + M2.encode())
    return connack + suback + pub0 + pub1 + b"\xd0\x00"


def _expected() -> list[object]:
    return [
        Ready(None, 0),
        Ready("room1", 0),
        Delivery(3, 1, 7, 123_456, room="room1"),
        Delivery(4, 1, 9, 123_999, room="room1"),
        Reply(b"\x40\x02\x01\x2c"),  # the PUBACK of packet id 300
        Notice("pingresp"),
    ]


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_several_packets_in_one_frame_and_packets_split_across_frames(version: str) -> None:
    adapter = MqttAdapter({"version": version, "qos": 1}).connection()
    level = adapter.level
    adapter.open("u1", None)
    adapter.join("room1", 6)  # packet id 7
    stream = _stream(level)
    assert adapter.parse(stream) == _expected()

    adapter = MqttAdapter({"version": version, "qos": 1}).connection()
    adapter.open("u1", None)
    adapter.join("room1", 6)
    events: list[object] = []
    for i in range(len(stream)):  # one byte per frame: every packet spans frames
        got = adapter.parse(stream[i : i + 1])
        events.extend(got if isinstance(got, list) else [got] if got is not None else [])
    assert events == _expected()


def test_decoder_keeps_a_split_remaining_length() -> None:
    body = b"x" * 200  # remaining length 200: two bytes (c8 01)
    data = packet(0x30, utf8("t") + body)
    decoder = StreamDecoder()
    assert decoder.feed(data[:2]) == []  # the first byte of the length only
    assert decoder.feed(data[2:]) == [(0x30, utf8("t") + body)]


def test_puback_is_the_ack_and_a_v5_refusal_is_rejected() -> None:
    adapter = MqttAdapter({"version": "5", "qos": 1}).connection()
    adapter.send("r", M1, 41)  # packet id 42
    adapter.send("r", M2, 43)  # packet id 44
    assert adapter.parse(b"\x40\x02\x00\x2a") == Ack(41)
    assert adapter.parse(b"\x40\x04\x00\x2c\x97\x00") == Rejected(43, "puback_0x97")


def test_connack_refusals_and_a_resume_whose_session_is_gone() -> None:
    adapter = MqttAdapter({"clean_session": False}).connection()
    assert adapter.parse(b"\x20\x02\x00\x05") == Rejected(None, "connack_0x05", "not_authorized")
    adapter.resume("u1", None, {"r1": 0, "r2": 0})
    assert adapter.parse(b"\x20\x02\x01\x00") == [
        Ready(None),
        Notice("session_present"),
        Ready("r1"),
        Ready("r2"),
    ]
    adapter.resume("u1", None, {"r1": 0, "r2": 0})
    events = adapter.parse(b"\x20\x02\x00\x00")  # session present 0: subscribe again
    assert events[:2] == [Ready(None), Notice("session_lost")]
    assert events[2] == Reply(subscribe_packet(4, 0xFFFF, ["r1", "r2"], 0))
    assert adapter.parse(b"\x90\x04\xff\xff\x00\x80") == [
        Ready("r1"),
        Rejected(None, "subscribe_refused", "SUBACK 0x80 for r2"),
    ]


def test_each_connection_has_its_own_buffer_and_ids() -> None:
    shared = make_adapter("mqtt", {"qos": 1})
    a, b = shared.connection(), shared.connection()
    data = packet(0x30, utf8("r") + M1.encode())
    assert a.parse(data[:3]) is None and b.parse(data) == Delivery(3, 1, 7, 123_456, room="r")
    assert a.parse(data[3:]) == Delivery(3, 1, 7, 123_456, room="r")


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({"qos": 2}, "protocol_options.qos: 2 must be 0 or 1 (QoS 2 is not supported)"),
        ({"version": "3"}, "protocol_options.version: '3' must be \"3.1.1\" or \"5\""),
        ({"topic": "chat/+"}, "protocol_options.topic: 'chat/+' must hold {room} once and no "
                              "wildcard (+ #)"),
        ({"keepalive": -1}, "protocol_options.keepalive: -1 must be 0 .. 65535 seconds"),
        ({"client_id": "{usr}"}, "protocol_options.client_id: unknown placeholder {usr} (this "
                                  "frame may use {conn}, {token}, {user})"),
        ({"qos1": 1}, "protocol_options: Object contains unknown field `qos1`"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line(options: dict, line: str) -> None:
    with pytest.raises(AdapterError) as caught:
        make_adapter("mqtt", options)
    assert str(caught.value) == line


def test_bad_options_in_a_scenario_file_exit_2_with_one_line(tmp_path: Path) -> None:
    path = scenario_toml(
        tmp_path / "mq.toml", {"qos": 2}, scenario="chat", protocol="mqtt",
        target="ws://127.0.0.1:9/ws",
    )  # fmt: skip
    done = rtbench("run", str(path), "--quiet", timeout=60)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.strip().splitlines() == [
        "rtbench: protocol_options.qos: 2 must be 0 or 1 (QoS 2 is not supported)"
    ]


# -- against real brokers: RabbitMQ (3.1.1), Mosquitto (5) -----------------------------------


@pytest.fixture
def mosquitto() -> Iterator[MqttBroker]:
    """A Mosquitto of the test's own behind the WebSocket bridge (MQTT 5)."""
    yield from mosquitto_broker()


BROKERS = [
    pytest.param("3.1.1", id="rabbitmq-3.1.1"),
    pytest.param("5", id="mosquitto-5"),
]
"""Each MQTT version against the broker it is tested with (RabbitMQ 3.10 speaks 3.1.1 only)."""


def broker_url(request: pytest.FixtureRequest, version: str) -> str:
    """The broker of ``version``: the machine's RabbitMQ, or a Mosquitto of the test's own."""
    if version == "5":
        return request.getfixturevalue("mosquitto").url  # type: ignore[no-any-return]
    return request.getfixturevalue("mqtt_url")  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", BROKERS)
def test_chat_at_qos_0_as_in_the_getting_started_example(
    request: pytest.FixtureRequest, version: str
) -> None:
    url = broker_url(request, version)
    # drain: up to 10 s for the last deliveries of a broker slowed by its neighbours (it
    # ends as soon as every expected delivery is in); 3 s was once 14 deliveries short
    sc = scenario(
        "chat", url, protocol="mqtt", protocol_options={"version": version},
        users=24, room_size=6, rate=5, duration=3, drain=10,
    )  # fmt: skip
    _, results = run(sc, LENIENT)
    t = results.totals
    assert t.connections_ready == t.connections_held == 24 and not t.closes_by_code
    assert t.sent > 0 and t.expected_deliveries == t.sent * 5
    assert t.delivered == t.expected_deliveries and t.lost == t.duplicated == t.out_of_order == 0
    assert results.latency["delivery"].count == t.delivered
    assert t.events_by_type["own_message"] == t.sent  # the broker sends it to its publisher too
    assert results.exit_code == ExitCode.OK


@pytest.mark.parametrize("version", BROKERS)
def test_fanout_at_qos_1_pubacks_are_the_acks(request: pytest.FixtureRequest, version: str) -> None:
    url = broker_url(request, version)
    sc = scenario(
        "fanout", url, protocol="mqtt", protocol_options={"qos": 1, "version": version},
        users=30, room_size=10, publishers=1, rate=10, duration=3,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.sent > 0 and t.acked == t.sent and results.latency["ack"].count == t.sent
    assert t.delivered == t.expected_deliveries > 0 and t.lost == t.duplicated == 0
    assert results.latency["delivery"].count == t.delivered


@pytest.mark.parametrize("version", BROKERS)
def test_a_silent_client_is_dropped_after_one_and_a_half_keepalives(
    request: pytest.FixtureRequest, version: str
) -> None:
    """What the adapter's PINGREQs prevent (MQTT 3.1.1 section 3.1.2.10, 5.0 3.1.2.10)."""
    url = broker_url(request, version)
    level = VERSIONS[version]

    async def silent() -> float:
        async with websockets.connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
            await ws.send(connect_packet(level, f"silent-{time.time_ns()}", 1, clean=True))
            assert (await ws.recv())[:1] == b"\x20"  # CONNACK
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
            return time.monotonic() - started

    # Mosquitto 2.0 finds silent clients on a periodic sweep, seconds apart (seen: 5.7 s)
    assert 1.0 <= asyncio.run(silent()) < (5.0 if version == "3.1.1" else 10.0)


@pytest.mark.parametrize("version", BROKERS)
def test_pingreqs_keep_quiet_connections_past_the_keepalive(
    request: pytest.FixtureRequest, version: str
) -> None:
    """keepalive 1 s, almost no traffic for 4 s: every connection lives on its PINGREQs."""
    sc = scenario(
        "chat", broker_url(request, version), protocol="mqtt",
        protocol_options={"keepalive": 1, "version": version},
        users=12, room_size=4, rate=0.2, duration=4,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    assert t.connections_held == 12 and not t.closes_by_code
    assert t.events_by_type["pingresp"] >= 12 * 6  # one per 0.5 s per connection
    assert t.lost == 0


@pytest.mark.parametrize("version", BROKERS)
def test_persistent_session_resumes_after_every_connection_is_cut(
    request: pytest.FixtureRequest, version: str, tmp_path: Path
) -> None:
    """clean_session off (MQTT 5: clean start off, Session Expiry Interval 3600), QoS 1:
    the proxy resets every connection mid-run; each client reconnects with its client id,
    the broker says the session is present (no SUBSCRIBE again) and sends what was queued
    while it was away; unacked publishes go again."""
    url = broker_url(request, version)
    # RabbitMQ keeps persistent sessions until a clean CONNECT ends them: under a prefix
    # the fixture ends afterwards; a Mosquitto of the test's own goes with its sessions
    prefix = request.getfixturevalue("client_prefix") if version == "3.1.1" else "m5-"
    options = {
        "qos": 1, "clean_session": False, "client_id": prefix + "{user}", "version": version,
    }  # fmt: skip
    path = scenario_toml(
        tmp_path / "mq.toml", options, scenario="chat", protocol="mqtt", users=16,
        room_size=4, rate=8.0, ramp=0.3, duration=4.0, drain=10.0, seed=3,
    )  # fmt: skip
    out = tmp_path / "out"
    slo = lenient_slo(tmp_path)
    done = rtbench(
        "run", str(path), "-t", url, "--fault", "cut@1.5s", "-q", "-o", str(out), "--slo", slo
    )
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-2000:]
    results = results_of(out)
    t = results.totals
    # every client lost its connection at the cut; a client can lose it again while the
    # broker still tears down its old connection (seen once: 17 losses for 16 clients), and
    # each loss must end in a resumed session
    assert t.reconnects >= 16 and t.connections_held == 16
    _every_loss_resumed(results, 16)
    assert t.lost == 0 and t.delivered == t.expected_deliveries > 0
    # at least once: a publish whose PUBACK the cut lost is sent again, and a message
    # the broker had written to a socket that died is delivered again; both are counted
    assert t.acked == t.sent
    assert t.duplicated <= t.resent + 16 * 4
    if version == "5":  # Mosquitto keeps every session, whatever the timing: all resumed
        assert t.events_by_type.get("session_present") == t.reconnects
        assert "session_lost" not in t.events_by_type and t.drained
        assert results.latency["ack"].count == t.sent
        assert results.latency["delivery"].count == t.delivered


async def _events(
    ws: ClientConnection, adapter: MqttAdapter, until: Callable[[list[object]], bool]
) -> list[object]:
    """The adapter's events of what ``ws`` receives (10 s at most), until ``until(events)``;
    every ``Reply`` (a PUBACK) is written back, as a driver does."""
    events: list[object] = []
    async with asyncio.timeout(10):
        while not until(events):
            got = adapter.parse(await ws.recv())  # type: ignore[arg-type]
            for event in got if isinstance(got, list) else [got] if got is not None else []:
                events.append(event)
                if isinstance(event, Reply):
                    await ws.send(event.payload)
    return events


async def test_mqtt_5_session_keeps_qos_1_messages_sent_while_the_client_is_away(
    mosquitto: MqttBroker,
) -> None:
    """The resume, packet by packet, against Mosquitto: a client with clean start off and a
    Session Expiry Interval subscribes at QoS 1; the bridge is killed (the connection dies
    with no DISCONNECT); five QoS 1 messages are published to its topic meanwhile, straight
    to the broker's TCP port; the bridge comes back and the client's resume CONNECT gets
    session present, every room back without a SUBSCRIBE, and the five messages."""
    options = {"version": "5", "qos": 1, "clean_session": False, "session_expiry": 60}
    adapter = MqttAdapter(options).connection()
    url = mosquitto.url
    async with websockets.connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "mqtt"
        for frame in adapter.open("u1", None):
            await ws.send(frame)
        assert await _events(ws, adapter, lambda e: e) == [Ready(None, 0)]
        await ws.send(adapter.join("room1", 0))
        assert await _events(ws, adapter, lambda e: e) == [Ready("room1", 0)]
        mosquitto.bridge.kill()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)

    markers = [marker(9, 1, n, 1_000 + n) for n in range(5)]
    reader, writer = await asyncio.open_connection("127.0.0.1", mosquitto.tcp_port)
    writer.write(connect_packet(5, "publisher", 10, clean=True))
    for n, text in enumerate(markers):
        writer.write(publish_packet(5, "room1", text.encode(), 1, n + 1))
    decoder, pubacks = StreamDecoder(), []
    while len(pubacks) < 5:
        got = decoder.feed(await asyncio.wait_for(reader.read(4096), 10))
        pubacks += [body[:2] for first, body in got if first >> 4 == 4]
    writer.close()
    assert pubacks == [(n + 1).to_bytes(2, "big") for n in range(5)]

    mosquitto.bridge.start()  # the same port
    async with websockets.connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        for frame in adapter.resume("u1", None, {"room1": 0}):
            await ws.send(frame)
        events = await _events(ws, adapter, lambda e: sum(isinstance(x, Delivery) for x in e) == 5)
    assert events[:3] == [Ready(None, 0), Notice("session_present"), Ready("room1", 0)]
    deliveries = [e for e in events if isinstance(e, Delivery)]
    assert deliveries == [Delivery(9, 1, n, 1_000 + n, room="room1") for n in range(5)]
    assert sum(isinstance(e, Reply) for e in events) == 5  # each PUBACKed
    assert not any(isinstance(e, Rejected | Notice) for e in events[3:])


def test_mqtt_5_run_resumes_when_the_bridge_dies_and_comes_back(mosquitto: MqttBroker) -> None:
    """``rtbench``'s engine through a real outage: the bridge is SIGKILLed about 1.5 s into
    the load and started again (same port) 1 s later; every client gets its session back
    (session present), the QoS 1 messages the broker queued meanwhile arrive, the sends
    made while it was down go out after the resume, and nothing is lost."""
    sc = scenario(
        "chat", mosquitto.url, protocol="mqtt", users=12, room_size=4, rate=6, duration=5,
        drain=10, reconnect=ReconnectPolicy(),
        protocol_options={"version": "5", "qos": 1, "clean_session": False},
    )  # fmt: skip

    def outage() -> None:
        # the run's workers take a while to start on a busy machine: count from the moment
        # all 12 clients are through the bridge (then the joins, then 1.5 s of load)
        deadline = time.monotonic() + 30
        while mosquitto.bridge.relayed() < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        mosquitto.bridge.kill()
        time.sleep(1.0)
        mosquitto.bridge.start()

    fault = threading.Thread(target=outage)
    fault.start()
    try:
        _, results = run(sc, LENIENT)
    finally:
        fault.join()
    t = results.totals
    assert t.reconnects >= 12 and t.connections_held == 12
    assert t.events_by_type.get("session_present") == t.reconnects
    assert "session_lost" not in t.events_by_type
    assert results.latency["recovery"].count == t.reconnects
    assert t.sent > 0 and t.acked == t.sent and results.latency["ack"].count == t.sent
    assert t.lost == 0 and t.delivered == t.expected_deliveries > 0 and t.drained
    assert t.duplicated <= t.resent + 12 * 4


def test_mqtt_5_half_cut_gets_what_the_other_half_sent_while_it_was_away(
    mosquitto: MqttBroker, tmp_path: Path
) -> None:
    """Half the clients are cut and stay away up to 0.5 s (``first_spread_ms``) while the
    other half keep publishing at QoS 1 into their rooms: the broker queues those messages
    in the away clients' sessions and sends them after the resume. Without the session they
    are lost (the same run with ``clean_session = true``: 43 of 1,506 lost); here every one
    arrives, late by the time away (max 439 ms in that comparison)."""
    options = {"version": "5", "qos": 1, "clean_session": False}
    path = scenario_toml(
        tmp_path / "mq.toml", options, scenario="chat", protocol="mqtt", users=16,
        room_size=4, rate=8.0, ramp=0.3, duration=4.0, drain=10.0, seed=5,
        reconnect={"first_spread_ms": 500},
    )  # fmt: skip
    out = tmp_path / "out"
    slo = lenient_slo(tmp_path)
    done = rtbench(
        "run", str(path), "-t", mosquitto.url, "--fault", "cut:50%@1.5s", "-q", "-o", str(out),
        "--slo", slo,
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-2000:]
    results = results_of(out)
    t = results.totals
    assert t.reconnects == 8 and t.connections_held == 16
    assert t.events_by_type.get("session_present") == 8 and "session_lost" not in t.events_by_type
    assert results.latency["recovery"].count == 8
    assert t.acked == t.sent > 0
    assert t.lost == 0 and t.delivered == t.expected_deliveries and t.drained
    # what was queued for an away client arrived after its resume, tens of ms at least late
    # (a live delivery through the bridge takes a few ms)
    assert results.latency["delivery"].max >= 50


def _every_loss_resumed(results, clients: int) -> None:  # type: ignore[no-untyped-def]
    """Every loss ended with the session back: kept by the broker (``session_present``), or
    re-subscribed because the broker had dropped it (``session_lost``: RabbitMQ 3.10 does
    so when a client that just came back is cut off again while its old connection is
    still being torn down, seen at a load average near 5). Only then can messages be
    lost, and every message is accounted for either way."""
    t = results.totals
    kept = t.events_by_type.get("session_present", 0)
    dropped = t.events_by_type.get("session_lost", 0)
    assert kept + dropped == t.reconnects >= clients
    assert results.latency["recovery"].count == t.reconnects
    assert t.delivered + t.lost == t.expected_deliveries > 0
    if not dropped:
        assert t.lost == 0 and t.drained


def test_mqtt_5_where_the_broker_speaks_it(mqtt_url: str) -> None:  # noqa: F811
    """RabbitMQ speaks MQTT 5 from 3.13; an older one closes the upgrade (1011) at CONNECT 5
    and the run says so per connection, instead of hanging."""
    sc = scenario(
        "chat", mqtt_url, protocol="mqtt", protocol_options={"version": "5"},
        users=8, room_size=4, rate=4, duration=2, connect_timeout=5,
    )  # fmt: skip
    _, results = run(sc)
    t = results.totals
    if t.connections_ready:
        assert t.delivered == t.expected_deliveries > 0 and t.lost == t.duplicated == 0
    else:
        assert t.connections_failed == 8 and set(t.failures_by_cause) <= {
            "closed_1011",
            "closed_1002",
            "closed_1006",
        }
        assert results.exit_code == ExitCode.UNREACHABLE


@pytest.mark.parametrize("version", BROKERS)
def test_mqtt_under_locust(request: pytest.FixtureRequest, version: str, tmp_path: Path) -> None:
    url = broker_url(request, version)
    path = scenario_toml(
        tmp_path / "mq.toml", {"qos": 1, "keepalive": 1, "version": version}, protocol="mqtt",
        scenario="chat",
        users=12, room_size=4, rate=4.0, ramp=0.5, duration=3.0, drain=4.0, seed=5,
        max_cpu_percent=100.0, max_loop_lag_ms=10000.0,
    )  # fmt: skip
    out = tmp_path / "out"
    slo = lenient_slo(tmp_path)
    done = rtbench("locust", str(path), "--headless", "-t", url, "--out", str(out), "--slo", slo)
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-3000:]
    results = results_of(out)
    t = results.totals
    assert results.run.engine == "locust"
    assert t.connections_held == 12 and not t.closes_by_code  # PINGREQs every 0.5 s
    assert t.sent > 0 and t.acked == t.sent
    assert t.delivered == t.expected_deliveries == t.sent * 3 and t.lost == t.duplicated == 0


@pytest.mark.parametrize("version", BROKERS)
async def test_monitor_probes_an_mqtt_broker(
    request: pytest.FixtureRequest, version: str, tmp_path: Path
) -> None:
    """Delivery probes through the broker, and a held connection kept up by PINGREQs."""
    room = f"probe-{time.time_ns()}"
    target = TargetConfig(
        url=broker_url(request, version), name="mqtt", protocol="mqtt", health_url="",
        metrics_url="", room=room,
        protocol_options={"keepalive": 1, "version": version},  # client ids: "{user}-{conn}"
    )  # type: ignore[arg-type]  # fmt: skip
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:

        async def good() -> dict | None:
            _, doc = await healthz(monitor)
            t = doc["targets"][0]
            window = t["windows"][0]
            return t if window["good"] >= 3 and window["good"] == window["total"] else None

        t = await poll(good, 30, "3 good probe intervals")
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
        await asyncio.sleep(2.5)  # more than 1.5 keepalives: only PINGREQs keep it open
        assert monitor.targets[0].held is not None and monitor.targets[0].held.connected
        _, doc = await healthz(monitor)
        assert doc["targets"][0]["recovery"]["count"] == 0


def test_the_documented_example_runs_as_written(
    mqtt_url: str,  # noqa: F811
    new_sessions_ended: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    toml, command = doc_example("### Worked example: QoS 1 chat with persistent sessions")
    name = toml.splitlines()[0].removeprefix("# ")
    (tmp_path / name).write_text(toml)
    done = run_documented(command.replace("ws://127.0.0.1:15675/ws", mqtt_url), name, tmp_path)
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-2000:]
    results = results_of(tmp_path / "mqtt-run")
    t = results.totals
    assert t.reconnects >= 40 and t.connections_held == 40 and t.acked == t.sent
    _every_loss_resumed(results, 40)


def test_the_documented_options_build_an_adapter() -> None:
    toml, _ = doc_example("## MQTT (`--protocol mqtt`)")
    adapter = make_adapter("mqtt", tomllib.loads(toml)["protocol_options"])
    assert Feature.RESUME in adapter.features and adapter.heartbeat_interval_s == 30
