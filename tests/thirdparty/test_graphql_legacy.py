"""`--protocol graphql-legacy` (subscriptions-transport-ws) against the real library on Node.

Same server and schema as the graphql-ws tests, in ``--legacy`` mode: Apollo's
subscriptions-transport-ws, whose subprotocol is named ``graphql-ws``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from loadtest.adapters import Ack, Delivery, Notice, Rejected, make_adapter, marker
from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import run, scenario
from tests.thirdparty.cli import rtbench, rtbench_run
from tests.thirdparty.conftest import scenario_toml
from tests.thirdparty.graphql_proc import GraphQLServer, graphql_servers


@pytest.fixture
def gql() -> Iterator[Callable[..., GraphQLServer]]:
    """Factory: ``gql("--legacy", "--ka-ms", "300")`` starts a GraphQL server."""
    yield from graphql_servers()


def test_chat_through_rtbench_run_with_keep_alives(gql, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """start/data/complete instead of subscribe/next; the server's ``ka`` every 0.3 s is
    counted, every delivery the server made arrives, the mutation results ack."""
    server = gql("--legacy", "--ka-ms", "300")
    done, results = rtbench_run(
        tmp_path / "out", "chat", "--target", server.url, "--protocol", "graphql-legacy",
        "--users", "20", "--room-size", "5", "--rate", "4", "--duration", "2", "--ramp", "0.3",
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    t = results.totals
    truth = server.stats()
    assert t.connections_ready == t.connections_held == 20 and not t.closes_by_code
    assert t.sent == truth["sends"] > 0 and truth["deliveries"] == t.sent * 5
    assert t.expected_deliveries == t.delivered == t.sent * 4
    assert t.lost == t.duplicated == t.out_of_order == 0 and t.drained
    assert t.acked == t.sent and t.events_by_type["own_message"] == t.sent
    assert t.events_by_type["ka"] >= 20 * 5  # ~2.5 s of one ka per 0.3 s, per connection
    assert results.latency["delivery"].count == t.delivered


def test_fanout(gql) -> None:  # type: ignore[no-untyped-def]
    server = gql("--legacy")
    _, fan = run(
        scenario("fanout", server.url, protocol="graphql-legacy",
                 users=20, room_size=10, publishers=1, rate=5, duration=1.5)
    )  # fmt: skip
    t = fan.totals
    assert t.expected_deliveries == t.sent * 10 == t.delivered > 0 and t.lost == 0


def test_the_subprotocol_names_must_not_be_mixed_up(gql) -> None:  # type: ignore[no-untyped-def]
    """The legacy protocol's subprotocol is ``graphql-ws``, the name of the newer
    library but not its protocol: a graphql-ws (library) server refuses it with 4406."""
    new = gql()
    _, results = run(
        scenario("chat", new.url, protocol="graphql-legacy", users=4, room_size=2, duration=1)
    )
    assert results.totals.failures_by_cause == {"closed_4406": 4}
    assert results.exit_code == ExitCode.UNREACHABLE


def test_rtt_is_refused_the_protocol_has_no_ping(tmp_path: Path) -> None:
    done = rtbench("run", "rtt", "--target", "ws://127.0.0.1:9", "--protocol", "graphql-legacy")
    assert done.returncode == ExitCode.USAGE
    assert "protocol 'graphql-legacy' lacks ping" in done.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"send": {"query": " "}}, "protocol_options.send.query: is empty"),
        ({"path": "graphql"}, "protocol_options.path: 'graphql' must start with /"),
        ({"ack": "yes"}, "protocol_options: Expected `bool`, got `str` - at `$.ack`"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(options: dict, message: str, tmp_path: Path) -> None:
    path = scenario_toml(tmp_path / "bad.toml", options, scenario="chat", protocol="graphql-legacy")
    done = rtbench("run", str(path), "--target", "ws://127.0.0.1:9", "--quiet")
    assert done.returncode == ExitCode.USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_frames_are_the_legacy_protocols_messages() -> None:
    """subscriptions-transport-ws PROTOCOL.md: start, data, connection_error, ka."""
    adapter = make_adapter("graphql-legacy")
    assert adapter.subprotocols == ("graphql-ws",) and adapter.headers("u", None) is None
    decode = msgspec.json.decode
    assert decode(adapter.open("u", None)[0]) == {"type": "connection_init", "payload": {}}
    joined = decode(adapter.join("lobby", 1))
    assert joined["type"] == "start" and joined["id"] == "s:lobby"
    text = marker(3, 0, 1, 123)
    assert decode(adapter.send("lobby", text, 7))["type"] == "start"
    data = {"id": "s:lobby", "type": "data", "payload": {"data": {"messages": {"body": text}}}}
    assert adapter.parse(msgspec.json.encode(data)) == Delivery(3, 0, 1, 123, room="lobby")
    assert adapter.parse(b'{"id":"7","type":"data","payload":{"data":{}}}') == Ack(7)
    assert adapter.parse(b'{"type":"ka"}') == Notice("ka")
    refused = b'{"type":"connection_error","payload":{"message":"bad token"}}'
    assert adapter.parse(refused) == Rejected(None, "connection_error", "bad token")
