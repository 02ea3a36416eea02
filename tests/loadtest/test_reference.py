"""Every scenario against the real reference server (``rtbench serve``, tests/support)."""

from __future__ import annotations

from rtbench.exitcodes import ExitCode
from tests.loadtest.conftest import UNTIMED, run, scenario


def test_chat_with_dms_typing_and_receipts(reference_server) -> None:  # type: ignore[no-untyped-def]
    sc = scenario(
        "chat", reference_server.url, users=30, room_size=6, rate=3, duration=2, procs=2,
        dm_share=0.2, typing_share=0.3, receipt_share=0.3,
    )  # fmt: skip
    _, results = run(sc, UNTIMED)
    t = results.totals
    assert t.connections_ready == 30
    assert t.expected_deliveries == t.delivered > 0 and t.lost == 0
    assert t.duplicated == t.out_of_order == 0
    assert t.acked == t.sent and not t.errors_by_code
    assert t.events_by_type.get("typing") and t.events_by_type.get("receipt")
    assert results.exit_code == ExitCode.OK


def test_fanout_rtt_and_connect(reference_server) -> None:  # type: ignore[no-untyped-def]
    _, fanout = run(
        scenario("fanout", reference_server.url, users=40, room_size=20, rate=4, duration=1.5)
    )
    assert fanout.totals.expected_deliveries == fanout.totals.delivered == fanout.totals.sent * 20
    # the target as people type it, with a trailing slash: the same endpoint, not a 404
    root = reference_server.url.removesuffix("ws")
    assert root.endswith(f":{reference_server.port}/")
    _, rtt = run(scenario("rtt", root, users=4, rate=10, duration=1.5))
    assert rtt.totals.delivered == rtt.totals.sent > 0  # ping -> pong
    assert rtt.totals.connections_ready == 4
    _, held = run(scenario("connect", reference_server.url, users=200, duration=1.5))
    assert held.totals.connections_answering == 200
    assert held.server.get("before", {}).get("rss_bytes")  # the server tells its memory
