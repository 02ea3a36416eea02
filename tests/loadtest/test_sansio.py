"""The sans-IO layers: markers, accounting ledger, session state, plan, scenarios, adapters."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from loadtest.adapters import (
    Ack,
    AdapterError,
    Delivery,
    Notice,
    Ready,
    Rejected,
    adapter_class,
    make_adapter,
    marker,
    parse_marker,
    parse_marker_bytes,
)
from loadtest.engine.clock import PreciseTimer, sleep_until
from loadtest.ledger import Arrival, RecipientLedger
from loadtest.plan import Plan, bitmap
from loadtest.scenarios import (
    EXAMPLES_DIR,
    Kind,
    Scenario,
    ScenarioError,
    load_scenario_file,
    scenario_from,
)
from loadtest.session import SeqOrder, SessionState
from rtbench.protocol import decode_client, encode
from rtbench.protocol import messages as m


def test_marker_round_trip_and_padding() -> None:
    text = marker(12, 3, 456, 1_234_567_890_123, size=100)
    assert len(text) == 100
    assert parse_marker(text) == (12, 3, 456, 1_234_567_890_123)
    assert parse_marker_bytes(text.encode()) == (12, 3, 456, 1_234_567_890_123)
    assert parse_marker(marker(5, -1, 2, 9)) == (5, -1, 2, 9)  # probes use stream -1
    assert parse_marker("hello world") is None
    assert parse_marker("rtb1.x.y") is None
    assert parse_marker_bytes(b"rtb1.1.2") is None


def test_ledger_classifies_every_arrival() -> None:
    ledger = RecipientLedger()
    arrivals = [ledger.arrive(0, 7, n) for n in (1, 2, 4, 3, 3, 5, 8, 6)]
    assert arrivals == [
        Arrival.NEW,
        Arrival.NEW,
        Arrival.NEW,  # 3 is now a gap
        Arrival.LATE,  # fills it: unique, out of order
        Arrival.DUPLICATE,
        Arrival.NEW,
        Arrival.NEW,  # 6 and 7 missing
        Arrival.LATE,
    ]
    assert ledger.missing() == 1  # 7 never came
    # another sender in the same stream is independent
    assert ledger.arrive(0, 8, 1) is Arrival.NEW


def test_session_tracks_last_seq_for_resume() -> None:
    session = SessionState()
    session.joined("r", 10)
    assert session.observe("r", 11) is SeqOrder.NEXT
    assert session.observe("r", 13) is SeqOrder.GAP
    assert session.resume() == {"r": 11}  # resume before the hole: 12 must come back
    # dedupe is exact: the missing 12 arriving late is new, a repeat of it is not
    assert session.observe("r", 12) is SeqOrder.FILL
    assert session.observe("r", 12) is SeqOrder.OLD
    assert session.observe("r", 9) is SeqOrder.OLD  # from before the join
    assert session.observe("s", 1) is SeqOrder.NEXT
    assert session.resume() == {"r": 13, "s": 1}
    assert (session.gaps, session.old) == (1, 2)


def test_chat_plan_membership_and_expected_recipients() -> None:
    plan = Plan(Scenario(scenario=Kind.CHAT, users=25, procs=2).resolved(), "t-")
    assert plan.rooms == 3  # rooms of 10: 10, 10, 5
    assert plan.members(2) == list(range(20, 25))
    assert plan.rooms_of(13) == [1]
    assert plan.partner(4) == 5 and plan.partner(5) == 4
    assert plan.partner(24) is None  # odd one out
    assert list(plan.local(1))[:3] == [1, 3, 5]
    everyone = plan.recipients(bitmap(25, range(25)))
    assert everyone[0] == 9 and everyone[2] == 4
    assert everyone[plan.dm_stream(4)] == 1
    without_3 = plan.recipients(bitmap(25, [i for i in range(25) if i != 3]))
    assert without_3[0] == 8
    assert without_3[plan.dm_stream(2)] == 0  # 3's partner has nobody to DM


def test_fanout_plan_publishers_join_their_room() -> None:
    plan = Plan(
        Scenario(scenario=Kind.FANOUT, users=10, room_size=5, publishers=2).resolved(), "t-"
    )
    assert plan.connections == 14
    assert plan.members(1) == [5, 6, 7, 8, 9, 12, 13]
    assert [plan.is_sender(i) for i in (0, 9, 10, 13)] == [False, False, True, True]
    assert plan.recipients(bitmap(14, range(14)))[0] == 6


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_example_scenarios_load(path: Path) -> None:
    scenario = load_scenario_file(path).resolved()
    assert scenario.duration and scenario.users


def test_scenario_errors_are_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('scenario = "chat"\nusers = 10\nroom_sise = 5\n')
    with pytest.raises(ScenarioError, match=r"bad.toml.*room_sise"):
        load_scenario_file(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("scenario = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario_file(broken)
    with pytest.raises(ScenarioError, match="unknown scenario"):
        scenario_from("chatt")
    with pytest.raises(ScenarioError, match=r"--procs 2"):
        Scenario(scenario=Kind.CONNECT, users=30_000).resolved()
    with pytest.raises(ScenarioError, match="--rate"):
        Scenario(scenario=Kind.CHAT, rate=0).resolved()
    with pytest.raises(ScenarioError, match="ws://"):
        Scenario(scenario=Kind.RTT, target="http://x").resolved()


def test_flags_override_file_values() -> None:
    base = load_scenario_file(EXAMPLES_DIR / "chat.toml")
    merged = base.with_overrides(users=40, rate=None, target="ws://127.0.0.1:1").resolved()
    assert (merged.users, merged.rate, merged.room_size) == (40, 1.0, 10)


def test_reference_adapter_frames_are_valid_protocol() -> None:
    adapter = make_adapter("reference")
    assert adapter.url("ws://h:1") == "ws://h:1/ws"
    assert adapter.url("ws://h:1/custom") == "ws://h:1/custom"
    (hello,) = adapter.open("alice", "tok")
    frames = [
        decode_client(hello),
        decode_client(adapter.join("r1", 1)),
        decode_client(adapter.send("r1", "hi", 2)),
        decode_client(adapter.dm("bob", "psst", 3)),
        decode_client(adapter.typing("r1", True)),
        decode_client(adapter.read("r1", 4)),
        decode_client(adapter.publish("r1", "ev", "data", 5)),
        decode_client(adapter.ping("x", 6)),
    ]
    assert [type(f) for f in frames] == [
        m.Hello,
        m.Join,
        m.Send,
        m.Direct,
        m.Typing,
        m.Read,
        m.Publish,
        m.Ping,
    ]
    assert frames[0].token == "tok"
    assert frames[2].cid == "2" and frames[2].id == 2


def test_reference_adapter_parses_server_frames() -> None:
    adapter = make_adapter("reference")
    text = marker(3, 1, 9, 12345)
    message = encode(m.Message(room="r", seq=5, sender="u3", body=text, ts=1))
    assert adapter.parse(message) == Delivery(3, 1, 9, 12345, room="r", seq=5)
    plain = encode(m.Message(room="r", seq=6, sender="x", body="hello", ts=1))
    assert adapter.parse(plain) == Notice("message", "r", 6)
    assert adapter.parse(encode(m.Ack(id=4, room="r", seq=5, ts=1))) == Ack(4, "r", 5)
    assert adapter.parse(encode(m.Joined(id=1, room="r", seq=2))) == Ready("r", 2)
    error = encode(m.Error(id=7, code="not_member", message="join first"))
    assert adapter.parse(error) == Rejected(7, "not_member", "join first")
    typing = encode(m.TypingNotice(room="r", user="u", state="start"))
    assert adapter.parse(typing) == Notice("typing", "r", None)
    assert adapter.parse(b"{nonsense") == Notice("unparsed")
    pong = encode(m.Pong(id=1, ts=marker(1, -1, 2, 3)))
    assert adapter.parse(pong) == Delivery(1, -1, 2, 3)


def test_echo_adapter_round_trip_and_features() -> None:
    adapter = make_adapter("echo")
    text = marker(1, 1, 1, 99)
    assert adapter.parse(adapter.ping(text, 1)) == Delivery(1, 1, 1, 99)
    assert "rooms" in (adapter.check({"rooms", "ping"}) or "")
    assert adapter.check({"ping"}) is None


def test_user_adapter_from_one_file(tmp_path: Path) -> None:
    path = tmp_path / "myproto.py"
    path.write_text(
        "from loadtest.adapters import Adapter, Delivery, Feature, parse_marker_bytes\n"
        "class Mine(Adapter):\n"
        "    name = 'mine'\n"
        "    features = frozenset({Feature.PING})\n"
        "    def ping(self, text, req_id):\n"
        "        return ('PING ' + text).encode()\n"
        "    def parse(self, payload):\n"
        "        found = parse_marker_bytes(payload.removeprefix(b'PING '))\n"
        "        return Delivery(*found) if found else None\n"
    )
    cls = adapter_class(str(path))
    assert cls.name == "mine"
    assert cls().parse(cls().ping(marker(1, 2, 3, 4), 1)) == Delivery(1, 2, 3, 4)
    with pytest.raises(AdapterError, match="does not exist"):
        adapter_class(str(tmp_path / "missing.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(AdapterError, match="found 0"):
        adapter_class(str(empty))
    with pytest.raises(AdapterError, match="unknown protocol"):
        adapter_class("nosuchprotocol")


def test_precise_timer_never_fires_early() -> None:
    async def main() -> list[int]:
        early = []
        for k in range(30):
            target = time.monotonic_ns() + 200_000 + k * 37_000
            await sleep_until(target)
            early.append(target - time.monotonic_ns())
        fired: list[int] = []
        first = asyncio.get_running_loop().create_future()

        def on_time() -> None:
            fired.append(time.monotonic_ns())
            if not first.done():
                first.set_result(None)

        timer = PreciseTimer(on_time)
        try:
            target = time.monotonic_ns() + 3_000_000
            timer.arm(time.monotonic_ns() + 50_000_000)
            timer.arm(target)  # re-arming replaces the deadline
            await first
            await asyncio.sleep(0.08)  # the replaced deadline must not fire as well
        finally:
            timer.close()
        assert len(fired) == 1 and fired[0] >= target
        return early

    import uvloop

    assert all(gap <= 0 for gap in uvloop.run(main()))
    assert all(gap <= 0 for gap in asyncio.run(main()))


def test_results_fields_round_trip() -> None:
    from rtbench.results import Totals

    totals = Totals(sent=3, rejected=1, events_by_type={"typing": 2}, drained=True)
    again = msgspec.json.decode(msgspec.json.encode(totals), type=Totals)
    assert again == totals


def test_the_documented_adapter_example_loads(tmp_path: Path) -> None:
    """docs/LOADTEST.md's one-file adapter must stay a working adapter."""
    doc = (Path(__file__).parents[2] / "docs" / "LOADTEST.md").read_text()
    code = doc.split("```python\n")[1].split("```")[0]
    path = tmp_path / "myproto.py"
    path.write_text(code)
    adapter = adapter_class(str(path))()
    assert adapter.url("ws://h:1") == "ws://h:1/socket"
    frame = adapter.send("r", marker(1, 0, 1, 5), 3)
    echoed = frame.replace(b'"op": "pub"', b'"op": "msg"')
    assert adapter.parse(echoed) == Delivery(1, 0, 1, 5, room="r")
