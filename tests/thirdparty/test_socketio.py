"""`--protocol socketio` through the real engine against a real python-socketio server."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtbench.exitcodes import ExitCode
from rtbench.slo import Status
from tests.loadtest.conftest import run, scenario


def _exact(results, truth: dict) -> None:  # type: ignore[no-untyped-def]
    """The engine's figures are the server's truth, delivery for delivery."""
    t = results.totals
    assert t.sent == truth["sends"] > 0
    assert t.expected_deliveries == truth["deliveries"]
    assert t.lost == truth["dropped"]
    assert t.duplicated == truth["duplicated"]
    assert t.out_of_order == truth["swapped"]
    assert t.delivered == truth["deliveries"] - truth["dropped"] == t.expected_deliveries - t.lost
    assert results.latency["delivery"].count == t.delivered


@pytest.mark.parametrize("scheme", ["ws", "http"])
def test_defaults_against_the_chat_example_as_written(sio_server, scheme: str) -> None:  # type: ignore[no-untyped-def]
    """No options: join + 'chat message' {room, body}, broadcast with sio.emit(room=...);
    the target named as Socket.IO users name it (http://) works as ws:// does."""
    server = sio_server("--plain")
    target = server.url.replace("ws://", f"{scheme}://", 1)
    sc = scenario("chat", target, protocol="socketio", users=20, room_size=5, rate=4)
    assert (sc.dm_share, sc.typing_share, sc.receipt_share) == (0, 0, 0)
    sc = scenario("chat", target, protocol="socketio", users=20, room_size=5, rate=4, duration=2)
    _, results = run(sc)
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 20
    assert t.sent == truth["sends"] > 0
    assert t.expected_deliveries == truth["deliveries"] == t.sent * 4
    assert t.lost == t.duplicated == t.out_of_order == 0 and t.drained
    assert results.exit_code == ExitCode.OK


@pytest.mark.parametrize("procs", [1, 2])
def test_exact_accounting_with_acks_join_acks_own_echo_and_fast_heartbeats(  # type: ignore[no-untyped-def]
    sio_server, procs: int
) -> None:
    """Drops, duplicates and swaps counted exactly; the sender's own copy is nobody's
    delivery; acks measured; Engine.IO pings every 0.3 s answered all run long."""
    server = sio_server(
        "--echo-sender",
        "--ping-interval",
        "0.3",
        "--ping-timeout",
        "1.0",
        drop_every=7,
        dup_every=5,
        swap_every=11,
    )
    options = {"ack": True, "join_ack": True}
    sc = scenario(
        "chat", server.url, protocol="socketio", protocol_options=options,
        users=16, room_size=4, rate=5, duration=3, procs=procs,
    )  # fmt: skip
    _, results = run(sc)
    truth = server.stats()
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    _exact(results, truth)
    t = results.totals
    assert t.events_by_type["own_message"] == truth["own"] == t.sent
    assert t.acked == t.sent and results.latency["ack"].count == t.sent
    assert t.connections_held == 16 and not t.closes_by_code  # ~5 s of 0.3 s pings: all ponged
    latency = next(v for v in results.verdicts if v.target == "delivery_latency")
    assert latency.status is Status.FAIL and "lost" in latency.detail


def test_a_client_that_does_not_pong_is_dropped(sio_server) -> None:  # type: ignore[no-untyped-def]
    """What the adapter's pong prevents: the server drops a silent client in ~0.6 s."""
    server = sio_server("--ping-interval", "0.3", "--ping-timeout", "0.3")

    async def silent_client() -> float:
        url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
        async with connect(url, ping_interval=None) as ws:
            await ws.send("40")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()  # pings arrive; we never answer them
            return loop.time() - started

    assert asyncio.run(silent_client()) < 5


def test_latency_matches_a_known_delay(sio_server) -> None:  # type: ignore[no-untyped-def]
    server = sio_server(delay_ms=25)
    sc = scenario(
        "chat", server.url, protocol="socketio", users=12, room_size=4, rate=5, duration=3
    )
    _, results = run(sc)
    truth = server.stats()
    measured = results.latency["delivery"]
    assert truth["truth_p50_ms"] >= 25.0
    assert results.totals.lost == 0
    # the server's own write time - scheduled time vs the recipient's receive time - scheduled
    assert -1.0 < measured.p50 - truth["truth_p50_ms"] < 5.0


def test_namespace_and_auth_payload(sio_server) -> None:  # type: ignore[no-untyped-def]
    server = sio_server("--namespace", "/chat", "--token", "s3cret")
    options = {"namespace": "/chat", "auth": {"token": "{token}"}}
    ok = scenario(
        "chat", server.url, protocol="socketio", protocol_options=options, token="s3cret",
        users=6, room_size=3, rate=4, duration=1.5,
    )  # fmt: skip
    _, results = run(ok)
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    refused = scenario(
        "chat", server.url, protocol="socketio", protocol_options=options, token="wrong",
        users=6, room_size=3, rate=4, duration=1.5,
    )  # fmt: skip
    _, results = run(refused)
    assert results.totals.failures_by_cause == {"rejected_connect_error": 6}
    assert results.exit_code == ExitCode.UNREACHABLE


def test_rtt_connect_and_fanout_through_a_ping_event(sio_server) -> None:  # type: ignore[no-untyped-def]
    server = sio_server()
    options = {"ping": {"event": "ping"}}
    _, rtt = run(
        scenario("rtt", server.url, protocol="socketio", protocol_options=options,
                 users=3, rate=10, duration=1.5)
    )  # fmt: skip
    assert rtt.totals.sent == rtt.totals.delivered == rtt.totals.expected_deliveries > 0
    _, held = run(
        scenario("connect", server.url, protocol="socketio", protocol_options=options,
                 users=40, duration=1.5, heartbeat=0.5)
    )  # fmt: skip
    assert held.totals.connections_answering == 40
    _, fan = run(
        scenario("fanout", server.url, protocol="socketio",
                 users=20, room_size=10, publishers=2, rate=4, duration=1.5)
    )  # fmt: skip
    t = fan.totals
    assert t.expected_deliveries == t.sent * 11 == t.delivered > 0
