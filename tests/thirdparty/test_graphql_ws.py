"""`--protocol graphql-ws` (graphql-transport-ws) against the real graphql-ws server on Node.

The server (``graphql_server/server.mjs``) is the graphql-ws library's ``useServer`` on
ws, with the README's getting-started schema grown into a chat; its own counts are the
truth every run is compared with.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loadtest.adapters import Ack, Delivery, Ready, Rejected, Reply, make_adapter, marker
from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from tests.loadtest.conftest import run, scenario
from tests.monitor.conftest import healthz, monitor_config, poll, running
from tests.thirdparty.cli import doc_example, doc_options, rtbench, rtbench_run
from tests.thirdparty.conftest import scenario_toml
from tests.thirdparty.graphql_proc import GraphQLServer, graphql_servers

SUBPROTOCOL = "graphql-transport-ws"


@pytest.fixture
def gql() -> Iterator[Callable[..., GraphQLServer]]:
    """Factory: ``gql("--app-ping-ms", "300")`` starts a graphql-ws server."""
    yield from graphql_servers()


def test_chat_through_rtbench_run_counts_every_delivery(gql, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No options (the README chat): subscribe per room, the mutation as the send, its
    result as the ack; every delivery the server made is counted, none lost."""
    server = gql()
    done, results = rtbench_run(
        tmp_path / "out", "chat", "--target", server.url, "--protocol", "graphql-ws",
        "--users", "20", "--room-size", "5", "--rate", "4", "--duration", "2", "--ramp", "0.3",
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 20
    assert t.sent == truth["sends"] > 0 and truth["subscriptions"] == 20
    # the pubsub sends every message to its sender too: counted as its own, not expected
    assert truth["deliveries"] == t.sent * 5 and t.events_by_type["own_message"] == t.sent
    assert t.expected_deliveries == t.delivered == t.sent * 4
    assert t.lost == t.duplicated == t.out_of_order == 0 and t.drained
    assert t.acked == t.sent and results.latency["ack"].count == t.sent
    assert results.latency["delivery"].count == t.delivered


def test_server_pings_are_answered_past_the_servers_pong_timeout(gql) -> None:  # type: ignore[no-untyped-def]
    """The server pings every 0.3 s and closes (4499) a client that missed one pong: a
    ~4 s run stays connected only because the adapter answers each ping."""
    server = gql("--app-ping-ms", "300")
    sc = scenario(
        "chat", server.url, protocol="graphql-ws", users=12, room_size=4, rate=4, duration=2.5
    )
    _, results = run(sc)
    t = results.totals
    assert t.connections_held == 12 and not t.closes_by_code
    assert t.delivered == t.expected_deliveries > 0 and t.lost == 0
    assert set(server.stats()["closes_by_code"]) <= {"1000", "1005"}  # our own closes only


def test_a_client_that_does_not_pong_is_dropped(gql) -> None:  # type: ignore[no-untyped-def]
    """What the adapter's pong prevents (the server above, with a silent client)."""
    server = gql("--app-ping-ms", "300")

    async def silent() -> int:
        async with connect(f"{server.url}/graphql", subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            await ws.send('{"type":"connection_init","payload":{}}')
            assert json.loads(await ws.recv()) == {"type": "connection_ack"}
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()  # pings arrive; we never answer them
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    assert asyncio.run(silent()) == 4499


def test_fanout_rtt_and_connect_heartbeats(gql) -> None:  # type: ignore[no-untyped-def]
    """Fanout publishes with the mutation; rtt and connect's heartbeat probes are
    protocol pings whose pong echoes the marker back."""
    server = gql()
    _, fan = run(
        scenario("fanout", server.url, protocol="graphql-ws",
                 users=20, room_size=10, publishers=1, rate=5, duration=1.5)
    )  # fmt: skip
    t = fan.totals
    assert t.expected_deliveries == t.sent * 10 == t.delivered > 0 and t.lost == 0
    _, rtt = run(scenario("rtt", server.url, protocol="graphql-ws", users=3, rate=10, duration=1.5))
    assert rtt.totals.sent == rtt.totals.delivered == rtt.totals.expected_deliveries > 0
    _, held = run(
        scenario(
            "connect", server.url, protocol="graphql-ws", users=30, duration=1.5, heartbeat=0.5
        )
    )
    assert held.totals.connections_answering == 30


def test_token_in_connection_init(gql) -> None:  # type: ignore[no-untyped-def]
    """``init`` is the connection_init payload; a refused one is closed with 4403."""
    server = gql("--token", "s3cret")
    options = {"init": {"token": "{token}"}}
    ok = scenario(
        "chat", server.url, protocol="graphql-ws", protocol_options=options, token="s3cret",
        users=6, room_size=3, rate=4, duration=1,
    )  # fmt: skip
    _, results = run(ok)
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    refused = scenario(
        "chat", server.url, protocol="graphql-ws", protocol_options=options, token="wrong",
        users=6, room_size=3, rate=4, duration=1,
    )  # fmt: skip
    _, results = run(refused)
    assert results.totals.failures_by_cause == {"closed_4403": 6}
    assert results.exit_code == ExitCode.UNREACHABLE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"send": {"variables": {"room": "{room}"}}},
            "protocol_options.send.variables: carry no {body}",
        ),
        ({"subscribe": {"variables": {"room": "{rooom}"}}}, "unknown placeholder {rooom}"),
        ({"marker": "data..body"}, "protocol_options.marker: 'data..body' is not a field path"),
        ({"subscription": {}}, "protocol_options: Object contains unknown field `subscription`"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(options: dict, message: str, tmp_path: Path) -> None:
    path = scenario_toml(tmp_path / "bad.toml", options, scenario="chat", protocol="graphql-ws")
    done = rtbench("run", str(path), "--target", "ws://127.0.0.1:9", "--quiet")
    assert done.returncode == ExitCode.USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_frames_are_the_protocols_messages() -> None:
    """The frames are graphql-transport-ws's (PROTOCOL.md), and the server's answers parse."""
    adapter = make_adapter("graphql-ws")
    assert adapter.subprotocols == (SUBPROTOCOL,) and adapter.headers("u", "t") is None
    assert adapter.url("ws://h:4000") == "ws://h:4000/graphql"
    decode = msgspec.json.decode
    assert [decode(f) for f in adapter.open("u", "t")] == [
        {"type": "connection_init", "payload": {}}
    ]
    assert decode(adapter.join("lobby", 1)) == {
        "type": "subscribe",
        "id": "s:lobby",
        "payload": {
            "query": "subscription ($room: String!) { messages(room: $room) { room body } }",
            "variables": {"room": "lobby"},
        },
    }
    text = marker(3, 0, 1, 123)
    sent = decode(adapter.send("lobby", text, 7))
    assert sent["type"] == "subscribe" and sent["id"] == "7"
    assert sent["payload"]["variables"] == {"room": "lobby", "body": text}
    assert sent["payload"]["query"].startswith("mutation")
    item = {
        "id": "s:lobby",
        "type": "next",
        "payload": {"data": {"messages": {"room": "lobby", "body": text}}},
    }
    assert adapter.parse(msgspec.json.encode(item)) == Delivery(3, 0, 1, 123, room="lobby")
    result = {"id": "7", "type": "next", "payload": {"data": {"sendMessage": {"room": "lobby"}}}}
    assert adapter.parse(msgspec.json.encode(result)) == Ack(7)
    refused = {"id": "7", "type": "error", "payload": [{"message": "no such room"}]}
    assert adapter.parse(msgspec.json.encode(refused)) == Rejected(
        7, "graphql_error", "no such room"
    )
    assert adapter.parse(b'{"type":"connection_ack"}') == Ready(None, 0)
    assert adapter.parse(b'{"type":"ping"}') == Reply(b'{"type":"pong"}')


def test_graphql_ws_under_locust(gql, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Locust users (websocket-client) name the subprotocol and count the same way;
    the server's pings every 0.3 s are answered there too."""
    server = gql("--app-ping-ms", "300")
    fields = dict(
        scenario="chat", users=12, room_size=4, rate=4.0, ramp=0.5, duration=3.0, drain=4.0,
        seed=5, max_cpu_percent=100.0, max_loop_lag_ms=10000.0, protocol="graphql-ws",
    )  # fmt: skip
    path = scenario_toml(tmp_path / "gql.toml", {}, **fields)
    command = [sys.executable, "-c", "from rtbench.entry import run; run()", "locust"]
    command += [str(path), "--headless", "-t", server.url, "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == ExitCode.OK, done.stdout[-3000:] + done.stderr[-3000:]
    results = read_results(tmp_path / "out" / "results.json")
    t = results.totals
    truth = server.stats()
    assert results.run.engine == "locust"
    assert t.sent == truth["sends"] > 0 and truth["deliveries"] == t.sent * 4
    assert t.expected_deliveries == t.delivered == t.sent * 3 and t.lost == t.duplicated == 0
    assert t.acked == t.sent
    assert t.connections_held == 12 and not t.closes_by_code


@pytest.mark.parametrize("protocol", ["graphql-ws", "graphql-legacy"])
def test_the_documented_example_runs(gql, protocol: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """docs/ADAPTERS.md's GraphQL example, as written, against each protocol's server."""
    server = gql("--legacy") if protocol == "graphql-legacy" else gql()
    args = doc_example("## GraphQL over WebSocket", tmp_path, server.url)
    args[args.index("--protocol") + 1] = protocol
    done = rtbench(*args)
    assert done.returncode == ExitCode.OK, done.stderr
    t = read_results(tmp_path / "out" / "results.json").totals
    assert t.sent == server.stats()["sends"] > 0
    assert t.expected_deliveries == t.delivered == t.sent * 4 and t.lost == t.duplicated == 0


def test_the_documented_options_build_both_adapters() -> None:
    blocks = doc_options("## GraphQL over WebSocket")
    assert len(blocks) == 2
    for options in blocks:
        for protocol in ("graphql-ws", "graphql-legacy"):
            assert make_adapter(protocol, options).check({"rooms"}) is None


def test_an_operation_given_only_its_query_keeps_the_default_variables() -> None:
    query = (
        "mutation ($room: String!, $body: String!) { announce(room: $room, body: $body) { room } }"
    )
    adapter = make_adapter("graphql-ws", {"publish": {"query": query}})
    frame = msgspec.json.decode(adapter.publish("lobby", "news", "text", 3))
    assert frame["payload"] == {"query": query, "variables": {"room": "lobby", "body": "text"}}


def test_reconnect_after_a_cut_resends_unacked_mutations(gql, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every connection reset 1 s into the sends: the shared client reconnects, inits,
    subscribes again (no resume in the protocol) and writes its unacked mutations again;
    every message is delivered or counted lost while its recipient was away."""
    server = gql()
    _, results = rtbench_run(
        tmp_path / "out", "chat", "--target", server.url, "--protocol", "graphql-ws",
        "--fault", "cut@1s", "--users", "12", "--room-size", "4", "--rate", "4",
        "--duration", "3", "--ramp", "0.3",
    )  # fmt: skip
    t = results.totals
    truth = server.stats()
    assert t.reconnects >= 12 and results.latency["recovery"].count >= 12
    assert t.connections_held == 12 and t.acked == t.sent
    assert truth["subscriptions"] >= 24  # every room subscribed again
    # a mutation resent after the cut may have been executed already (no idempotency key
    # in GraphQL): then the server published it twice
    assert t.sent <= truth["sends"] <= t.sent + t.resent
    assert t.expected_deliveries == t.delivered + t.lost and t.delivered > 0


async def test_monitor_probes_a_graphql_ws_server(gql, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The monitor (websockets) offers the subprotocol, its delivery probes pass, and its
    held connection answers the server's pings every 0.3 s (one missed is fatal)."""
    server = gql("--app-ping-ms", "300")
    target = TargetConfig(
        url=server.url, name="gql", protocol="graphql-ws", health_url="", metrics_url=""
    )  # type: ignore[call-arg]
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:

        async def good() -> dict | None:
            _, doc = await healthz(monitor)
            t = doc["targets"][0]
            window = t["windows"][0]
            return t if window["good"] >= 3 and window["good"] == window["total"] else None

        t = await poll(good, 30, "3 good probe intervals")
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
        await asyncio.sleep(1.5)  # five of the server's ping intervals
        held = monitor.targets[0].held
        assert held is not None and held.connected
        _, doc = await healthz(monitor)
        assert doc["targets"][0]["recovery"]["count"] == 0  # never dropped
    assert "4499" not in server.stats()["closes_by_code"]
